"""`pipeline_metrics`: every pipeline metric at an as-of date, in total and per group, as plain JSON."""
from __future__ import annotations

import pandas as pd

import features.analytics.flow as flow
import features.analytics.funnel as funnel
import features.analytics.health as health
from features.analytics.state import PipelineState, build_state
from features.dates import parse_as_of
from features.errors import LeadscoreError
from features.jsonsafe import json_safe
from features.schema import DEAL_CATEGORICAL, CanonicalData
from features.staleness import StaleRule, fit_stale_rule
from features.winrates import closed_win_rate, definition, won_within_rate

MISSING_GROUP = "(missing)"
STATIC_BINS = 5


def group_columns(data: CanonicalData) -> list[str]:
    """Deal columns a pipeline can be grouped by: the standard categoricals and declared categorical attributes."""
    declared = [n for n, kind in data.meta.attributes.items() if kind != "numeric"]
    return [c for c in dict.fromkeys(DEAL_CATEGORICAL + declared) if c in data.deals.columns and c != "account_id"]


def definitions(static: bool) -> dict[str, str]:
    """Which win rate (and conversion) each figure of the output shows, in words
    (`features.winrates`): the `definitions` entry of the metrics JSON."""
    closed = definition(closed_win_rate)
    if static:
        return {"win_rate": f"{closed} Window: every deal in the export.",
                "attribute_win_rates.win_rate": f"{closed} Window: the deals with that attribute value."}
    return {"funnel.win_rate": f"{closed} Window: every close up to as_of.",
            "velocity.win_rate": f"{closed} Window: the {flow.HISTORY_DAYS} days up to each date.",
            "cohorts.win_rate_<N>d": definition(won_within_rate),
            "funnel.stages.conversion": definition(funnel.funnel),
            "bottleneck.stages.conversion": definition(funnel.stage_history)}


def pipeline_metrics(data: CanonicalData, as_of, group_by: str | None = None, target: float | None = None,
                     stall_days_without_activity: int = 21, window_days: int = 30) -> dict:
    """All pipeline metrics at `as_of` (only what was known then), JSON-serialisable.

    With `group_by`, the same metrics for every value of that deal column (missing values
    form their own group) beside the total. Stalled-deal thresholds are the company-wide
    stage P90s, so a deal is flagged the same way in its group and in the total. Coverage
    needs a target, which applies to the total only.
    """
    if group_by is not None and group_by not in group_columns(data):
        raise LeadscoreError(f"cannot group by '{group_by}': choose one of {', '.join(group_columns(data)) or '(none)'}")
    head = {"dataset": data.meta.name, "group_by": group_by, "static": data.meta.static,
            "stages": list(data.meta.stages)}
    if data.meta.static:  # no dates: as_of cannot select anything
        return json_safe({"as_of": None, **head, **static_metrics(data, group_by), "definitions": definitions(True)})
    as_of = data.data_end if as_of is None else parse_as_of(as_of)
    head = {"as_of": as_of.isoformat(), **head}
    params = {"target": target, "stall_days_without_activity": stall_days_without_activity,
              "window_days": window_days}
    state = build_state(data, as_of)
    thresholds = health.stage_p90(state)
    extra = (group_by,) if group_by else ()
    rule = fit_stale_rule(data, as_of)  # company-wide, like the stall thresholds
    stale = health.stale_table(state, rule)
    total = _metrics(state, target, stall_days_without_activity, window_days, thresholds, extra, (stale, rule))
    out = {**head, "parameters": params, "activities_available": data.activities is not None,
           "stage_history_available": data.stage_events is not None and data.meta.stage_history == "recorded",
           "stage_history": None if data.stage_events is None else data.meta.stage_history,
           "definitions": definitions(False),
           "total": total}
    if group_by:
        keys = state.deals[group_by].astype("string").fillna(MISSING_GROUP)
        out["groups"] = [{"group": str(g), **_metrics(state.subset(keys == g), None, stall_days_without_activity,
                                                       window_days, thresholds, extra, (stale, rule))}
                         for g in sorted(keys.unique())]
    return json_safe(out)


def _metrics(state: PipelineState, target, stall_days: int, window_days: int, thresholds: dict,
             extra: tuple[str, ...], stale: tuple[pd.DataFrame, StaleRule]) -> dict:
    table, rule = stale
    table = table.loc[table["deal_id"].isin(state.deals["deal_id"])]
    stale_ids = table.loc[table["stale"], "deal_id"].to_numpy()
    return {"funnel": funnel.funnel(state), "time_in_stage": funnel.time_in_stage(state),
            "sales_cycle": funnel.sales_cycle(state), "deal_size": funnel.deal_size(state),
            "bottleneck": funnel.bottleneck(state), "velocity": flow.velocity(state, stale_ids),
            "changes": flow.changes(state, window_days),
            "stalled": health.stalled(state, stall_days, thresholds, extra_columns=("owner",) + extra),
            "stale": health.stale(table, rule),
            "cohorts": health.cohorts(state), "coverage": flow.coverage(state, target, stale_ids)}


def static_metrics(data: CanonicalData, group_by: str | None) -> dict:
    """A dataset without dates: win rate overall and by attribute value (numeric attributes in quantile bins)."""
    d = data.deals
    won, decided = d["outcome"] == "won", d["outcome"].isin(["won", "lost"])
    attrs = {}
    for col in group_columns(data) + [n for n, k in data.meta.attributes.items() if k == "numeric"]:
        values = d[col]
        if data.meta.attributes.get(col) == "numeric":
            values = pd.qcut(values, STATIC_BINS, duplicates="drop").astype("string")
        keys = values.astype("string").fillna(MISSING_GROUP)
        g = pd.DataFrame({"key": keys, "won": won, "decided": decided}).groupby("key")[["won", "decided"]].sum()
        attrs[col] = [{"value": str(k), "won": int(r.won), "lost": int(r.decided - r.won),
                       "win_rate": closed_win_rate(r.won, r.decided - r.won)} for k, r in g.iterrows()]
    return {"time_metrics": "unavailable: the dataset is static (no dates), so funnel timing, velocity, "
                            "changes, stalled deals and cohorts cannot be computed",
            "total": {"deals": int(len(d)), "won": int(won.sum()), "lost": int((decided & ~won).sum()),
                      "win_rate": closed_win_rate(won, decided & ~won),
                      "attribute_win_rates": attrs},
            "groups": [{"group": r["value"], **r} for r in attrs[group_by]] if group_by else None}



"""The target report, a step after the forecast. Per target row (period, group): closed-won
so far, the landing's P10/P50/P90 and P(hit target) from the forecast's own simulation,
the gap, the open pipeline due, pipeline coverage and the leads still needed.

A targets frame has columns period, target and optionally one group column (named like
`--group-by`, or "group"). Without a group column the targets are company totals, also
when the forecast is split by group. `checked_targets` raises every file error before
anything is simulated (`outlook.outlook` calls it first).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.errors import LeadscoreError
from training.forecast.core import Forecast
from training.forecast.newdeals import ALL
from training.forecast.periods import FREQS
from training.forecast.valuation import due_in

COVERAGE_DEFINITION = ("pipeline coverage = open pipeline amount due in the period (deals whose expected close "
                       "date, as known at the as-of date, falls in the period; overdue dates count in the first "
                       "period; deals without one are due when the model's median close date falls in it) / "
                       "remaining gap (target - closed-won so far in the period)")
LANDING_DEFINITION = ("landing = closed-won so far in the period + the simulated rest (open pipeline + new deals); "
                      "landing_p10/p50/p90 are quantiles of the simulated landings, from the forecast's simulation")
P_HIT_DEFINITION = "p_hit_target = share of the forecast's simulations whose landing >= target"
GAP_DEFINITION = "gap_to_target = target - landing_p50 (negative: the median landing is above the target)"
LEADS_DEFINITION = ("leads needed = max(gap_to_target, 0) / (historical share of new deals eventually won x mean "
                    "recent won amount), rounded up: 0 when the P50 landing meets the target")


@dataclass(frozen=True)
class TargetReport:
    """One row per target (`table`) and the expected eventual won value of one new lead."""

    table: pd.DataFrame
    value_per_new_lead: float

    def definitions(self) -> dict:
        return {"landing": LANDING_DEFINITION, "p_hit_target": P_HIT_DEFINITION, "gap_to_target": GAP_DEFINITION,
                "pipeline_coverage": COVERAGE_DEFINITION, "leads_needed": LEADS_DEFINITION,
                "value_per_new_lead": self.value_per_new_lead}


def target_report(targets: pd.DataFrame, fc: Forecast) -> TargetReport:
    """The report for `targets` as returned by `checked_targets`: one row per target,
    plus a company row per period whose per-group targets cover every forecast group."""
    per_lead = fc.new_deals.value_per_lead()
    rows = [_target_row(fc, t["period"], t["group"], float(t["target"]), per_lead) for _, t in targets.iterrows()]
    if fc.group_by and (targets["group"] != ALL).all():
        for period, part in targets.groupby("period", sort=False):
            if set(fc.sims.groups) <= set(part["group"]):
                rows.append(_target_row(fc, period, ALL, float(part["target"].sum()), per_lead))
    return TargetReport(table=pd.DataFrame(rows), value_per_new_lead=per_lead)


def _target_row(fc: Forecast, period: str, group: str, target: float, per_lead: float) -> dict:
    """One target (a handful per report, not per deal) read off the forecast's simulation."""
    k = int(np.flatnonzero(fc.periods["period"].to_numpy() == period)[0])
    prow, pipe = fc.periods.iloc[k], fc.deals
    landing = fc.sims.landing(group)[:, k]
    closed = float(fc.sims.closed_so_far(group)[k])
    in_group = np.ones(len(pipe), bool) if group == ALL else (pipe["group"] == group).to_numpy()
    due = in_group & due_in(pipe, fc.as_of, prow["start"], prow["end"], k == 0)
    shown = fc.table.loc[(fc.table["period"] == period) & (fc.table["group"] == group)]
    expected = float(shown["expected"].sum())
    q10, q50, q90 = np.quantile(landing, [0.1, 0.5, 0.9])
    gap, open_due = target - closed, float(pipe.loc[due, "amount"].sum())
    short = max(target - q50, 0.0)
    return {"period": period, "group": group, "target": target, "closed_won_so_far": closed,
            "expected_landing": closed + expected, "landing_p10": q10, "landing_p50": q50, "landing_p90": q90,
            "p_hit_target": float(np.mean(landing >= target)), "gap_to_target": target - q50,
            "remaining_gap": gap, "target_met": gap <= 0, "open_pipeline_due": open_due,
            "weighted_pipeline_due": float((pipe.loc[due, "amount"] * pipe.loc[due, "close_probability"]).sum()),
            "deals_due": int(due.sum()), "pipeline_coverage": open_due / gap if gap > 0 else None,
            "expected_from_open_pipeline": float(pipe.loc[in_group, f"exp_{k}"].sum()),
            "leads_needed": (int(np.ceil(short / per_lead)) if short > 0 else 0) if per_lead > 0 else None}


def checked_targets(targets: pd.DataFrame, periods: pd.DataFrame, freq: str, group_by: str | None,
                    group_values: pd.Series | None = None) -> pd.DataFrame:
    """Targets with columns period (as the forecast labels it), group ("(all)" for company
    targets) and numeric target, or a one-line error. `group_values`: the `--group-by`
    column of the deals, to name target groups that do not exist."""
    targets = _with_group_column(targets, group_by)
    try:
        targets["period"] = [str(pd.Period(str(p).strip(), FREQS[freq])) for p in targets["period"]]
        targets["target"] = pd.to_numeric(targets["target"], errors="raise").astype("float64")
    except (ValueError, TypeError) as exc:
        raise LeadscoreError(f"the targets file has a bad period or target value ({exc}): use periods like "
                             f"{periods['period'].iloc[0]} and numeric targets") from None
    if not np.isfinite(targets["target"]).all():
        raise LeadscoreError("the targets file has an empty or non-finite target: give a number in every row")
    unknown = sorted(set(targets["period"]) - set(periods["period"]))
    if unknown:
        raise LeadscoreError(f"targets for periods {unknown} are outside the forecast "
                             f"({', '.join(periods['period'])}): extend --periods or drop those rows")
    if targets.duplicated(["period", "group"]).any():
        raise LeadscoreError("the targets file has more than one target for the same period and group")
    if group_by and group_values is not None and (targets["group"] != ALL).any():
        known = set(group_values.astype("string").fillna("(none)").astype(str))
        missing = sorted(set(targets["group"]) - known)
        if missing:
            raise LeadscoreError(f"targets for {group_by} values {missing} that no deal has")
    return targets


def _with_group_column(targets: pd.DataFrame, group_by: str | None) -> pd.DataFrame:
    """period, target and group: the targets file's group column renamed, or "(all)"."""
    missing = [c for c in ("period", "target") if c not in targets]
    if missing:
        raise LeadscoreError(f"the targets file has no column {missing}: give columns period, "
                             f"[{group_by or 'group column'}], target")
    extra = [c for c in targets.columns if c not in ("period", "target")]
    if len(extra) > 1:
        raise LeadscoreError(f"the targets file has columns {extra}: give period, at most one group column, target")
    targets = targets[["period", "target"]].copy() if not extra else targets.copy()
    if not extra:
        targets["group"] = ALL
        return targets
    column = extra[0]
    if not group_by:
        raise LeadscoreError(f"the targets file has a group column '{column}': pass --group-by {column} "
                             f"(or drop the column for company targets)")
    if column not in (group_by, "group"):
        raise LeadscoreError(f"the targets file's group column '{column}' does not match --group-by {group_by}")
    targets = targets.rename(columns={column: "group"})
    targets["group"] = targets["group"].astype(str)
    return targets

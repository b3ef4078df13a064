"""Deals at risk and how creation cohorts mature: stalled deals, cohort win rates."""
from __future__ import annotations

import numpy as np
import pandas as pd

from features.analytics.funnel import completed_spells, stat
from features.analytics.state import PipelineState, amount_at, days, lookup
from features.dates import DAY
from features.staleness import StaleRule
from features.winrates import won_within_rate

COHORT_AGES = (30, 60, 90)
MAX_LISTED = 200  # stalled deals listed by amount; the count and amount always cover all of them
MIN_HISTORY = 5  # completed spells needed before a stage's P90 is trusted as a threshold


def stage_p90(state: PipelineState) -> dict[str, float]:
    """Historical P90 dwell per stage (completed spells up to as_of), where there is enough history."""
    done = completed_spells(state)
    g = done.groupby("stage")["dwell_days"]
    q = g.quantile(0.9)[g.size() >= MIN_HISTORY]
    return {str(k): float(v) for k, v in q.items()}


def stalled(state: PipelineState, stall_days_without_activity: int, thresholds: dict[str, float] | None = None,
            extra_columns: tuple[str, ...] = ()) -> dict:
    """Open deals in their stage longer than the stage's historical P90, or without activity.

    Days without activity count from the last activity, or from creation if there was none;
    that reason is only checked when an activities table exists.
    """
    as_of = state.as_of
    thresholds = stage_p90(state) if thresholds is None else thresholds
    d = state.deals.loc[state.open_mask(as_of)]
    now = state.at(d["deal_id"], as_of)
    d = d.assign(current_stage=np.asarray(state.stages, dtype=object)[now["stage_index"].astype("int64")])
    in_stage = days(as_of - pd.Series(now["stage_entered_at"], index=d.index))
    limit = d["current_stage"].map(thresholds).astype("float64")
    slow = (in_stage > limit).fillna(False).to_numpy(dtype=bool)
    if state.activities is not None:
        last = lookup(state.activities.groupby("deal_id")["occurred_at"].max(), d["deal_id"])
        quiet_days = days(as_of - last.fillna(d["created_at"]))
        quiet = (quiet_days > stall_days_without_activity).to_numpy(dtype=bool)
    else:
        quiet_days, quiet = pd.Series(np.nan, index=d.index), np.zeros(len(d), bool)
    flagged = slow | quiet
    amounts = np.nan_to_num(amount_at(state, d, as_of))
    rows = pd.DataFrame({"deal_id": d["deal_name"], "stage": d["current_stage"], "amount": amounts,
                         "days_in_stage": in_stage, "stage_p90_days": limit, "days_since_activity": quiet_days,
                         "slow": slow, "quiet": quiet, **{c: d[c] for c in extra_columns if c in d}})[flagged]
    rows = rows.sort_values(["amount", "deal_id"], ascending=[False, True])
    listed = [_stalled_row(r, stall_days_without_activity) for r in rows.head(MAX_LISTED).to_dict("records")]
    by_stage = rows.groupby("stage").size()
    return {"count": int(flagged.sum()), "amount": float(amounts[flagged].sum()),
            "open_deals": int(len(d)), "stall_days_without_activity": stall_days_without_activity,
            "activity_checked": state.activities is not None,
            "by_reason": {"slower_than_p90": int(slow.sum()), "no_activity": int(quiet.sum())},
            "by_stage": {s: int(by_stage.get(s, 0)) for s in state.stages},
            "thresholds_p90_days": thresholds, "listed": len(listed), "deals": listed}


def _stalled_row(r: dict, quiet_limit: int) -> dict:
    reasons = []
    if r.pop("slow"):
        reasons.append(f"{r['days_in_stage']:.0f} days in {r['stage']} > P90 {r['stage_p90_days']:.0f}")
    if r.pop("quiet"):
        reasons.append(f"no activity for {r['days_since_activity']:.0f} days (> {quiet_limit})")
    return {**{k: stat(v) if isinstance(v, (float, np.floating)) else v for k, v in r.items()},
            "reasons": reasons}


def cohorts(state: PipelineState) -> list[dict]:
    """Per creation month: share of deals won within 30/60/90 days and their median cycle.

    A cohort is old enough for age k when its youngest possible deal is k days old at
    as_of (start of the next month + k days <= as_of); otherwise the figures are None.
    """
    d = state.deals
    month = d["created_at"].dt.to_period("M")
    cycle = days(d["closed_at"] - d["created_at"]).where(d["outcome"] == "won")
    frame = pd.DataFrame({"month": month, "cycle": cycle})
    g = frame.groupby("month")
    out = []
    for m, part in g:
        row = {"month": str(m), "deals": int(len(part))}
        next_month = (m + 1).start_time
        for k in COHORT_AGES:
            mature = next_month + k * DAY <= state.as_of
            won_k = part["cycle"] <= k
            row[f"win_rate_{k}d"] = won_within_rate(part["cycle"], k) if mature else None
            row[f"cycle_{k}d"] = stat(part["cycle"][won_k].median()) if mature else None
        out.append(row)
    return out


def stale_table(state: PipelineState, rule: StaleRule) -> pd.DataFrame:
    """Every deal open at as_of: deal_id (dense key), deal_name, amount, stale and the reason
    (`features.staleness`, the rule as known at as_of)."""
    as_of = state.as_of
    d = state.deals.loc[state.open_mask(as_of)]
    now = state.at(d["deal_id"], as_of)
    stage = np.asarray(state.stages, dtype=object)[now["stage_index"].astype("int64")]
    age = days(as_of - d["created_at"]).to_numpy(dtype="float64")
    in_stage = days(as_of - pd.Series(now["stage_entered_at"], index=d.index)).to_numpy(dtype="float64")
    flag, reason = rule.flag(age, in_stage, stage)
    return pd.DataFrame({"deal_id": d["deal_id"].to_numpy(), "deal_name": d["deal_name"].to_numpy(),
                         "amount": np.nan_to_num(amount_at(state, d, as_of)), "stale": flag, "reason": reason})


def stale(table: pd.DataFrame, rule: StaleRule) -> dict:
    """Count and value of the stale open pipeline (`stale_table` rows of these deals)."""
    flagged = table.loc[table["stale"]].sort_values(["amount", "deal_name"], ascending=[False, True])
    value, total = float(flagged["amount"].sum()), float(table["amount"].sum())
    return {"count": int(len(flagged)), "amount": value, "open_deals": int(len(table)), "open_amount": total,
            "share_of_open_amount": value / total if total > 0 else None, "rule": rule.to_dict(),
            "deals": [{"deal_id": str(r["deal_name"]), "amount": float(r["amount"]), "reason": r["reason"]}
                      for r in flagged.head(MAX_LISTED).to_dict("records")]}

"""What finance and sales managers act on beside the forecast: the deals at risk in the
first period (each with its reasons in words) and the target report (closed-won so far,
gap, pipeline due, coverage, leads needed)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from features.errors import LeadscoreError
from features.schema import CanonicalData
from training.newdeals import ALL, NewDealModel
from training.periods import DAY, FREQS

if TYPE_CHECKING:
    from training.forecast import Forecast, ForecastConfig

COVERAGE_DEFINITION = ("pipeline coverage = open pipeline amount due in the period (deals whose expected close "
                       "date, as known at the as-of date, falls in the period; overdue dates count in the first "
                       "period; deals without one are due when the model's median close date falls in it) / "
                       "remaining gap (target - closed-won so far in the period)")
LEADS_DEFINITION = ("leads needed = (remaining gap - expected bookings from the open pipeline in the period) / "
                    "(historical share of new deals eventually won x mean recent won amount), rounded up")


def due_in(pipe: pd.DataFrame, as_of: pd.Timestamp, start: pd.Timestamp, end: pd.Timestamp, first: bool) -> np.ndarray:
    """Open deals due in [start, end): expected close date as known at as_of, else the model's median."""
    days_to = pipe["days_to_expected_close"].to_numpy(dtype="float64")
    median = np.expm1(pipe["log_close_days_p50"].to_numpy(dtype="float64"))
    days = np.where(np.isnan(days_to), median, days_to)
    lo = -np.inf if first else (start - as_of) / DAY
    return (days >= lo) & (days < (end - as_of) / DAY)


def risk_list(pipe: pd.DataFrame, data: CanonicalData, as_of: pd.Timestamp, period: pd.Series,
              config: ForecastConfig) -> pd.DataFrame:
    """Open deals due in the first period that are at risk, each with its reasons in words:
    low P(won), close date pushed, stalled beyond the stage's historical P90 dwell
    (completed spells before as_of), no activity recently."""
    from features.analytics.health import stage_p90
    from features.analytics.state import build_state

    due = pipe.loc[due_in(pipe, as_of, period["start"], period["end"], True)].copy()
    p90 = stage_p90(build_state(data, as_of))
    limit = due["stage"].astype("string").map(p90).astype("float64")
    quiet = due["days_since_last_activity"].astype("float64")
    has_activities = data.activities is not None
    checks = {
        "low": due["close_probability"] < config.low_probability,
        "pushed": due["close_date_pushes"].fillna(0) >= 1,
        "stalled": (due["days_in_stage"] > limit).fillna(False),
        "quiet": ((quiet > config.quiet_days) | quiet.isna()) & has_activities,
    }
    flagged = pd.concat(checks, axis=1).any(axis=1)
    words = {
        "low": lambda r: f"low win probability ({r['close_probability']:.0%} < {config.low_probability:.0%})",
        "pushed": lambda r: f"close date pushed {int(r['close_date_pushes'])} time(s), "
                            f"{r['close_date_days_pushed']:.0f} days in total",
        "stalled": lambda r: f"{r['days_in_stage']:.0f} days in {r['stage']}, beyond the historical P90 of "
                             f"{p90.get(str(r['stage']), np.nan):.0f} days",
        "quiet": lambda r: "no activity recorded" if pd.isna(r["days_since_last_activity"]) else
                           f"no activity for {r['days_since_last_activity']:.0f} days (> {config.quiet_days})",
    }
    rows = due.loc[flagged]
    reasons = [
        "; ".join(words[name](r) for name in checks if checks[name].loc[i])
        for i, r in rows.iterrows()
    ]  # loops over flagged deals only, to write their sentences
    out = pd.DataFrame({"deal_id": rows["deal_id"], "group": rows["group"], "stage": rows["stage"].astype("string"),
                        "amount": rows["amount"], "close_probability": rows["close_probability"],
                        "expected_in_period": rows["exp_0"], "reasons": reasons})
    return out.sort_values(["amount", "deal_id"], ascending=[False, True]).reset_index(drop=True)


def read_targets(path) -> pd.DataFrame:
    """Targets CSV: period (e.g. 2024-07 or 2024Q3), optional group column, target."""
    try:
        # every cell as text, and "NA" stays "NA" (a region), not a missing value
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise LeadscoreError(f"cannot read targets file {path}: {exc}") from None
    return frame


def target_report(fc: Forecast, data: CanonicalData, targets: pd.DataFrame, newm: NewDealModel) -> pd.DataFrame:
    """Per target row: closed-won so far, remaining gap, open and weighted pipeline due,
    coverage, the gap left after the expected pipeline wins, and leads needed."""
    targets = _checked_targets(fc, targets)
    pipe, as_of = fc.deals, fc.as_of
    won = data.deals.loc[(data.deals["outcome"] == "won") & (data.deals["closed_at"] <= as_of)]
    won_group = won[fc.group_by].astype("string").fillna("(none)").astype(str) if fc.group_by else \
        pd.Series(ALL, index=won.index)
    won_value = won["amount"].fillna(won["amount"].median()) if fc.value_unit == "amount" else pd.Series(1.0, index=won.index)
    per_lead = newm.value_per_lead()
    rows = []
    for _, t in targets.iterrows():
        k = int(fc.periods.index[fc.periods["period"] == t["period"]][0])
        prow = fc.periods.iloc[k]
        cal_start = pd.Period(prow["period"], FREQS[fc.freq]).start_time
        in_group = (pipe["group"] == t["group"]).to_numpy() if fc.group_by else np.ones(len(pipe), bool)
        due = in_group & due_in(pipe, as_of, prow["start"], prow["end"], k == 0)
        so_far = float(won_value[(won["closed_at"] >= cal_start) & (won_group == t["group"])].sum())
        gap = float(t["target"]) - so_far
        open_due = float(pipe.loc[due, "amount"].sum())
        expected_open = float(pipe.loc[in_group, f"exp_{k}"].sum())
        after = max(gap - expected_open, 0.0)
        rows.append({"period": t["period"], "group": t["group"], "target": float(t["target"]),
                     "closed_won_so_far": so_far, "remaining_gap": gap, "open_pipeline_due": open_due,
                     "weighted_pipeline_due": float((pipe.loc[due, "amount"] * pipe.loc[due, "close_probability"]).sum()),
                     "deals_due": int(due.sum()), "pipeline_coverage": open_due / gap if gap > 0 else None,
                     "target_met": gap <= 0, "expected_from_open_pipeline": expected_open,
                     "gap_after_expected_pipeline": after,
                     "leads_needed": int(np.ceil(after / per_lead)) if per_lead > 0 else None})
    out = pd.DataFrame(rows)
    out.attrs["definitions"] = {"pipeline_coverage": COVERAGE_DEFINITION, "leads_needed": LEADS_DEFINITION,
                                "value_per_new_lead": per_lead}
    return out


def _checked_targets(fc: Forecast, targets: pd.DataFrame) -> pd.DataFrame:
    targets = targets.copy()
    if "group" not in targets and fc.group_by and fc.group_by in targets:
        targets = targets.rename(columns={fc.group_by: "group"})
    missing = [c for c in ("period", "target") if c not in targets]
    if missing:
        raise LeadscoreError(f"the targets file has no column {missing}: give columns period, "
                             f"[{fc.group_by or 'group'}], target")
    if "group" in targets and not fc.group_by:
        raise LeadscoreError("the targets file has a group column: pass --group-by with the column it refers to")
    targets["group"] = targets["group"].astype(str) if "group" in targets else ALL
    targets["period"] = targets["period"].astype(str).str.strip()
    try:
        targets["period"] = [str(pd.Period(p, FREQS[fc.freq])) for p in targets["period"]]
        targets["target"] = pd.to_numeric(targets["target"], errors="raise")
    except (ValueError, TypeError) as exc:
        raise LeadscoreError(f"the targets file has a bad period or target value ({exc}): use periods like "
                             f"{fc.periods['period'].iloc[0]} and numeric targets") from None
    unknown = sorted(set(targets["period"]) - set(fc.periods["period"]))
    if unknown:
        raise LeadscoreError(f"targets for periods {unknown} are outside the forecast "
                             f"({', '.join(fc.periods['period'])}): extend --periods or drop those rows")
    return targets

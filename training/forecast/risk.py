"""The deals at risk in the first forecast period, each with its reasons in words.

A step after the forecast: it reads the valued open deals, the deal state at the as-of
date (`features.snapshots.deals_at`: stage, days in stage, close-date pushes) and the
stage's historical P90 dwell (`features.analytics.health.stage_p90`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from features.analytics.health import stage_p90
from features.analytics.state import build_state
from features.schema import CanonicalData
from features.snapshots import deals_at
from training.forecast.valuation import due_in

STATE_COLUMNS = ["stage", "days_in_stage", "close_date_pushes", "close_date_days_pushed"]


def risk_list(deals: pd.DataFrame, known: CanonicalData, as_of: pd.Timestamp, period: pd.Series,
              low_probability: float, quiet_days: int) -> pd.DataFrame:
    """Open deals due in `period` (the first one) that are at risk: low P(won), close date
    pushed, stalled beyond the stage's historical P90 dwell (completed spells before
    as_of), no activity recently. `deals`: the forecast's valued open deals."""
    due = with_deal_state(deals.loc[due_in(deals, as_of, period["start"], period["end"], True)], known, as_of)
    p90 = stage_p90(build_state(known, as_of))
    checks = risk_checks(due, p90, low_probability, quiet_days, known.activities is not None)
    flagged = checks.any(axis=1)
    rows = due.loc[flagged]
    words = _reason_words(p90, low_probability, quiet_days)
    reasons = [
        "; ".join(words[name](r) for name in checks if checks.at[i, name])
        for i, r in rows.iterrows()
    ]  # loops over flagged deals only, to write their sentences
    out = pd.DataFrame({"deal_id": rows["deal_id"], "group": rows["group"], "stage": rows["stage"].astype("string"),
                        "amount": rows["amount"], "close_probability": rows["close_probability"],
                        "expected_in_period": rows["exp_0"], "reasons": reasons})
    return out.sort_values(["amount", "deal_id"], ascending=[False, True]).reset_index(drop=True)


def with_deal_state(deals: pd.DataFrame, known: CanonicalData, as_of: pd.Timestamp) -> pd.DataFrame:
    """`deals` with their stage state at as_of (`STATE_COLUMNS`) from the snapshot engine."""
    state = deals_at(known, as_of).set_index("deal_id")[STATE_COLUMNS]
    return deals.join(state, on="deal_id")


def risk_checks(due: pd.DataFrame, p90: dict[str, float], low_probability: float, quiet_days: int,
                has_activities: bool) -> pd.DataFrame:
    """One boolean column per reason (low, pushed, stalled, quiet), one row per due deal."""
    limit = due["stage"].astype("string").map(p90).astype("float64")
    quiet = due["days_since_last_activity"].astype("float64")
    return pd.DataFrame({
        "low": due["close_probability"] < low_probability,
        "pushed": due["close_date_pushes"].fillna(0) >= 1,
        "stalled": (due["days_in_stage"] > limit).fillna(False),
        "quiet": ((quiet > quiet_days) | quiet.isna()) & has_activities,
    }, index=due.index)


def _reason_words(p90: dict[str, float], low_probability: float, quiet_days: int) -> dict:
    return {
        "low": lambda r: f"low win probability ({r['close_probability']:.0%} < {low_probability:.0%})",
        "pushed": lambda r: f"close date pushed {int(r['close_date_pushes'])} time(s), "
                            f"{r['close_date_days_pushed']:.0f} days in total",
        "stalled": lambda r: f"{r['days_in_stage']:.0f} days in {r['stage']}, beyond the historical P90 of "
                             f"{p90.get(str(r['stage']), np.nan):.0f} days",
        "quiet": lambda r: "no activity recorded" if pd.isna(r["days_since_last_activity"]) else
                           f"no activity for {r['days_since_last_activity']:.0f} days (> {quiet_days})",
    }

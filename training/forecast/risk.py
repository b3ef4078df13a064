"""The deals at risk in the first forecast period, each with its reasons in words.

A step after the forecast: it reads the valued open deals, the deal state at the as-of
date (`features.snapshots.deals_at`: stage, days in stage, close-date pushes) and the
stage's historical P90 dwell (`features.analytics.health.stage_p90`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.analytics.health import stage_p90
from features.analytics.state import build_state
from features.schema import CanonicalData
from features.snapshots import deals_at
from training.forecast.valuation import due_in

STATE_COLUMNS = ["stage", "days_in_stage", "close_date_pushes", "close_date_days_pushed"]


@dataclass(frozen=True)
class RiskContext:
    """What the risk list reads besides the deals: their stage state at as_of and each
    stage's historical P90 dwell (the same for every forecast at that date)."""

    state: pd.DataFrame  # deal_id -> STATE_COLUMNS
    p90: dict[str, float]


def risk_context(known: CanonicalData, as_of: pd.Timestamp) -> RiskContext:
    """The deal state (`features.snapshots.deals_at`) and stage P90 dwell at `as_of`."""
    return RiskContext(state=deals_at(known, as_of).set_index("deal_id")[STATE_COLUMNS],
                       p90=stage_p90(build_state(known, as_of)))


def risk_list(deals: pd.DataFrame, known: CanonicalData, as_of: pd.Timestamp, period: pd.Series,
              low_probability: float, quiet_days: int, context: RiskContext | None = None) -> pd.DataFrame:
    """Open deals due in `period` (the first one) that are at risk: low P(won), close date
    pushed, stalled beyond the stage's historical P90 dwell (completed spells before
    as_of), no activity recently. `deals`: the forecast's valued open deals; `context`:
    `risk_context(known, as_of)` when already computed."""
    context = context or risk_context(known, as_of)
    due = deals.loc[due_in(deals, as_of, period["start"], period["end"], True)].join(context.state, on="deal_id")
    p90 = context.p90
    checks = risk_checks(due, p90, low_probability, quiet_days, known.activities is not None)
    flagged = checks.any(axis=1)
    rows = due.loc[flagged]
    said = _reason_words(rows, checks.loc[flagged], p90, low_probability, quiet_days)
    reasons = ["; ".join(w for w in sentence if w) for sentence in zip(*said.values())]
    out = pd.DataFrame({"deal_id": rows["deal_id"], "group": rows["group"], "stage": rows["stage"].astype("string"),
                        "amount": rows["amount"], "close_probability": rows["close_probability"],
                        "expected_in_period": rows["exp_0"], "reasons": reasons})
    return out.sort_values(["amount", "deal_id"], ascending=[False, True]).reset_index(drop=True)


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


def _reason_words(rows: pd.DataFrame, checks: pd.DataFrame, p90: dict[str, float], low_probability: float,
                  quiet_days: int) -> dict[str, list[str]]:
    """Per reason, its sentence for each of `rows` where `checks` flags it ("" elsewhere);
    formatted column by column (no row objects)."""
    def each(name: str, fmt, *cols) -> list[str]:
        values = zip(checks[name].tolist(), *(rows[c].tolist() for c in cols))
        return [fmt(*v) if flag else "" for flag, *v in values]

    return {
        "low": each("low", lambda p: f"low win probability ({p:.0%} < {low_probability:.0%})", "close_probability"),
        "pushed": each("pushed", lambda n, d: f"close date pushed {int(n)} time(s), {d:.0f} days in total",
                       "close_date_pushes", "close_date_days_pushed"),
        "stalled": each("stalled", lambda d, s: f"{d:.0f} days in {s}, beyond the historical P90 of "
                                                f"{p90.get(str(s), np.nan):.0f} days", "days_in_stage", "stage"),
        "quiet": each("quiet", lambda d: "no activity recorded" if pd.isna(d) else
                      f"no activity for {d:.0f} days (> {quiet_days})", "days_since_last_activity"),
    }

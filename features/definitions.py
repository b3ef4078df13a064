"""What the features are: their names and groups, the words a sales rep reads for each
(`DESCRIPTIONS`), and the feature groups that are pure functions of a deal's state at T
(amount, expected close date, calendar). `features.build.FeatureBuilder` assembles them
with the groups that need fitted history (stage dwell, activity, group win rates).
"""
from __future__ import annotations

import numpy as np

from features.arrays import DealArrays

RAW_CATEGORICAL = ["owner", "source", "segment", "product", "region", "team"]
STAGE_FEATURES = ["stage_index", "furthest_stage_index", "days_in_stage", "deal_age_days",
                  "stage_changes", "stage_regressions", "stage_mean_dwell_days", "stage_velocity"]
AMOUNT_FEATURES = ["amount", "log_amount", "amount_change_ratio", "amount_changes"]
CLOSE_DATE_FEATURES = ["days_to_expected_close", "expected_close_overdue", "close_date_pushes",
                       "close_date_days_pushed"]
CALENDAR_FEATURES = ["days_to_month_end", "days_to_quarter_end", "month_of_quarter", "quarter_end_month"]
DESCRIPTIONS = {
    "stage": "current stage", "stage_index": "position of the current stage",
    "furthest_stage_index": "furthest stage reached", "days_in_stage": "days in current stage",
    "deal_age_days": "deal age in days", "stage_changes": "number of stage changes",
    "stage_regressions": "times the deal went back a stage",
    "stage_mean_dwell_days": "usual days spent in this stage",
    "stage_velocity": "time in stage versus the usual time", "amount": "deal amount",
    "log_amount": "deal amount (log)", "amount_change_ratio": "amount versus the first amount",
    "amount_changes": "number of amount changes", "days_to_expected_close": "days until expected close",
    "expected_close_overdue": "expected close date has passed",
    "close_date_pushes": "times the close date was pushed", "close_date_days_pushed": "days the close date was pushed",
    "days_since_last_activity": "days since the last activity",
    "activity_trend": "recent activity versus earlier activity",
    "global_win_rate": "overall win rate", "owner_open_deals": "owner's open deals",
    "owner_avg_won_amount": "owner's average won amount",
    "account_prior_wins": "account's earlier wins", "account_prior_losses": "account's earlier losses",
    "days_to_month_end": "days to month end", "days_to_quarter_end": "days to quarter end",
    "month_of_quarter": "month of the quarter", "quarter_end_month": "last month of a quarter",
}
GROUP_LABELS = {"owner": "owner", "account": "account", "source": "lead source", "product": "product",
                "segment": "segment", "region": "region", "team": "team"}


def group_name(column: str) -> str:
    return "account" if column == "account_id" else column


def amount_features(state: dict, arrays: DealArrays, pos) -> dict:
    """Latest amount known at T; deals.amount only for deals whose events carry none."""
    event_amount = state["event_amount"]
    amount = np.where(state["has_event_amount"], event_amount, arrays.amount[pos])
    first = state["first_amount"]
    return {"amount": amount, "log_amount": np.log1p(amount),
            "amount_change_ratio": event_amount / np.where(first > 0, first, np.nan),
            "amount_changes": state["amount_changes"]}


def close_date_features(state: dict, at: np.ndarray) -> dict:
    days_to = days(state["expected_close_date"] - at)
    return {"days_to_expected_close": days_to,
            "expected_close_overdue": np.where(np.isnan(days_to), np.nan, (days_to < 0).astype("float64")),
            "close_date_pushes": state["close_date_pushes"],
            "close_date_days_pushed": state["close_date_days_pushed"]}


def calendar_features(at: np.ndarray) -> dict:
    day = at.astype("datetime64[D]")
    month = at.astype("datetime64[M]")
    month_in_quarter = month.astype("int64") % 3  # month 0 of the epoch is a January
    month_end = (month + 1).astype("datetime64[D]") - 1
    quarter_end = (month - month_in_quarter + 3).astype("datetime64[D]") - 1
    return {"days_to_month_end": (month_end - day).astype("float64"),
            "days_to_quarter_end": (quarter_end - day).astype("float64"),
            "month_of_quarter": (month_in_quarter + 1).astype("float64"),
            "quarter_end_month": (month_in_quarter == 2).astype("float64")}


def days(delta: np.ndarray) -> np.ndarray:
    return delta / np.timedelta64(1, "D")


def known_only(found: dict[str, np.ndarray], codes: np.ndarray) -> dict[str, np.ndarray]:
    """A known group with nothing before T has zero history; an unseen one has none (NaN)."""
    known = codes >= 0
    return {name: np.where(known & ~np.isnan(values), values, np.where(known, 0.0, np.nan))
            for name, values in found.items()}


def reserved_names() -> set[str]:
    return set(STAGE_FEATURES + AMOUNT_FEATURES + CLOSE_DATE_FEATURES + CALENDAR_FEATURES + RAW_CATEGORICAL
               + ["stage", "deal_id", "as_of", "account_id"] + list(DESCRIPTIONS))

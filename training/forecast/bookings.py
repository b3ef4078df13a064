"""The one bookings rule: what a won deal books, and realised bookings per period.

A won deal books its amount. A won deal whose amount is unknown books the rule's
fallback: the median amount of the deals won at or before the as-of date (known then,
so a backtest at a past origin never uses a later win). With no won amount known yet,
the median amount of the open deals stands in; with no amount at all the forecast
counts won deals and every win books 1.

The forecast (open pipeline and new deals), its calibration (`realised_history`,
`shock_history`), the target report, the backtest's actuals and its baselines all
value wins with one `BookingRule`, so they compare like with like.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from features.schema import CanonicalData
from training.forecast.periods import FREQS

AMOUNT = "amount"
WON_DEALS = "won deals"


@dataclass(frozen=True)
class BookingRule:
    """What one won deal books: its amount, `fallback_amount` when the amount is
    unknown, or 1 when `counts_deals`."""

    fallback_amount: float
    counts_deals: bool = False

    @property
    def value_unit(self) -> str:
        """"amount" or "won deals"."""
        return WON_DEALS if self.counts_deals else AMOUNT

    def booked(self, amount: pd.Series) -> pd.Series:
        """The value each won deal books, aligned with `amount`."""
        if self.counts_deals:
            return pd.Series(1.0, index=amount.index)
        return amount.astype("float64").fillna(self.fallback_amount)


def won_amounts(deals: pd.DataFrame, as_of: pd.Timestamp) -> pd.Series:
    """Known amounts of the deals won at or before `as_of`."""
    won = (deals["outcome"] == "won") & (deals["closed_at"] <= as_of)
    amount = deals[AMOUNT] if AMOUNT in deals else pd.Series(np.nan, index=deals.index)
    return amount.loc[won.fillna(False).to_numpy(dtype=bool)].dropna().astype("float64")


def booking_rule(deals: pd.DataFrame, as_of: pd.Timestamp, open_amounts: np.ndarray | None = None) -> BookingRule:
    """The rule as known at `as_of`: fallback = median won amount known then; else the
    median of `open_amounts` (the open deals' amounts); else count won deals."""
    won = won_amounts(deals, as_of)
    if len(won):
        return BookingRule(float(won.median()))
    amounts = np.asarray(open_amounts if open_amounts is not None else [], dtype="float64")
    if np.isfinite(amounts).any():
        return BookingRule(float(np.nanmedian(amounts)))
    return BookingRule(1.0, counts_deals=True)


def won_between(deals: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> np.ndarray:
    """Mask of the deals won with a close in [start, end)."""
    won = (deals["outcome"] == "won") & (deals["closed_at"] >= start) & (deals["closed_at"] < end)
    return won.fillna(False).to_numpy(dtype=bool)


def realised_bookings(deals: pd.DataFrame, rule: BookingRule, starts: Sequence[pd.Timestamp],
                      ends: Sequence[pd.Timestamp]) -> np.ndarray:
    """Booked value of the deals won in each period [starts[k], ends[k])."""
    amount = deals[AMOUNT] if AMOUNT in deals else pd.Series(np.nan, index=deals.index)
    value = rule.booked(amount)
    return np.array([float(value.loc[won_between(deals, s, e)].sum()) for s, e in zip(starts, ends)],
                    dtype="float64")


def realised_history(known: CanonicalData, as_of: pd.Timestamp, freq: str, n: int, rule: BookingRule) -> pd.DataFrame:
    """Booked value of the wins closed in each of the `n` whole periods before the one
    containing as_of, and in the current period so far (NaN before the data starts)."""
    cur = as_of.to_period(FREQS[freq])
    labels = [cur - k for k in range(n, -1, -1)]
    deals = known.deals.loc[(known.deals["closed_at"] <= as_of).fillna(False).to_numpy(dtype=bool)]
    actual = realised_bookings(deals, rule, [p.start_time for p in labels], [(p + 1).start_time for p in labels])
    first = known.deals["created_at"].min()
    started = np.array([(p + 1).start_time > first for p in labels])
    return pd.DataFrame({"period": [str(p) for p in labels], "actual": np.where(started, actual, np.nan),
                         "so_far": [p == cur for p in labels]})

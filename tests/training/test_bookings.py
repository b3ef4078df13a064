"""The one bookings rule: what a won deal books, and realised bookings per period."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.forecast.bookings import BookingRule, booking_rule, realised_bookings, won_amounts

T = pd.Timestamp


def deals(rows: list[tuple]) -> pd.DataFrame:
    """(deal_id, outcome, closed_at, amount) rows."""
    frame = pd.DataFrame(rows, columns=["deal_id", "outcome", "closed_at", "amount"])
    frame["closed_at"] = pd.to_datetime(frame["closed_at"])
    frame["amount"] = frame["amount"].astype("float64")
    return frame


BOOK = deals([
    ("a", "won", "2024-01-10", 100.0),
    ("b", "won", "2024-01-20", np.nan),
    ("c", "won", "2024-02-05", 300.0),
    ("d", "lost", "2024-02-06", 1_000.0),
    ("e", "won", "2024-03-01", np.nan),
    ("f", None, None, 50.0),
])


def test_a_won_deal_books_its_amount_or_the_median_known_at_the_as_of_date():
    rule = booking_rule(BOOK, T("2024-03-01"))
    assert rule == BookingRule(200.0) and rule.value_unit == "amount"  # median of 100 and 300; lost and open ignored
    booked = rule.booked(BOOK["amount"])
    assert booked.tolist() == [100.0, 200.0, 300.0, 1_000.0, 200.0, 50.0]


def test_the_fallback_uses_only_wins_closed_by_the_as_of_date():
    assert booking_rule(BOOK, T("2024-02-01")).fallback_amount == 100.0  # c (300) closes later
    assert won_amounts(BOOK, T("2024-02-01")).tolist() == [100.0]
    assert booking_rule(BOOK, T("2024-02-05")).fallback_amount == 200.0  # closed_at <= as_of counts


def test_without_a_known_won_amount_the_open_amounts_stand_in_or_deals_are_counted():
    early = T("2024-01-15")
    no_won = deals([("a", "won", "2024-01-10", np.nan), ("b", None, None, np.nan)])
    assert booking_rule(no_won, early, open_amounts=np.array([np.nan, 40.0, 60.0])) == BookingRule(50.0)
    counting = booking_rule(no_won, early, open_amounts=np.array([np.nan]))
    assert counting.counts_deals and counting.value_unit == "won deals"
    assert counting.booked(BOOK["amount"]).tolist() == [1.0] * len(BOOK)


def test_realised_bookings_per_period():
    rule = booking_rule(BOOK, T("2024-03-01"))
    starts = [T("2024-01-01"), T("2024-02-01"), T("2024-03-01")]
    ends = [T("2024-02-01"), T("2024-03-01"), T("2024-04-01")]
    np.testing.assert_allclose(realised_bookings(BOOK, rule, starts, ends), [300.0, 300.0, 200.0])
    counted = realised_bookings(BOOK, BookingRule(1.0, counts_deals=True), starts, ends)
    np.testing.assert_allclose(counted, [2.0, 1.0, 1.0])
    # the period is [start, end): a close at the end instant belongs to the next one
    assert realised_bookings(BOOK, rule, [T("2024-01-10")], [T("2024-01-20")])[0] == 100.0


def test_a_frame_without_amounts_counts_deals():
    bare = BOOK.drop(columns="amount")
    rule = booking_rule(bare, T("2024-03-01"))
    assert rule.counts_deals
    assert realised_bookings(bare, rule, [T("2024-01-01")], [T("2024-04-01")])[0] == pytest.approx(4.0)

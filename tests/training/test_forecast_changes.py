"""What changed since the previous forecast: deal movements read at two dates from a
hand-built history (every movement once), and the previous forecast from a real store."""
from __future__ import annotations

import pandas as pd
import pytest

from features.schema import DatasetMeta
from features.validation import validate
from training.forecast.changes import deal_changes, previous_forecast
from training.store.connection import open_store
from training.store.forecasts import record_forecasts
from training.store.schema import NO_GROUP

SINCE, UNTIL = pd.Timestamp("2024-04-20"), pd.Timestamp("2024-05-20")
Q2 = (pd.Timestamp("2024-04-01"), pd.Timestamp("2024-07-01"))
T = pd.Timestamp


def _history():
    # deal: created, closed, outcome, final amount; events: (stage, at, amount, expected close)
    deals = [("A", "2024-03-01", None, None, 150.0), ("B", "2024-03-01", "2024-05-10", "won", 200.0),
             ("C", "2024-03-01", "2024-05-05", "lost", 300.0), ("D", "2024-03-01", None, None, 400.0),
             ("E", "2024-05-01", None, None, 50.0), ("F", "2024-05-03", "2024-05-15", "won", 70.0),
             ("G", "2024-03-01", None, None, 60.0), ("H", "2024-03-01", "2024-04-10", "won", 999.0),
             ("I", "2024-06-01", None, None, 5.0)]
    events = [("A", "lead", "2024-03-01", 100.0, "2024-06-15"), ("A", "qualified", "2024-05-01", 150.0, "2024-06-15"),
              ("B", "lead", "2024-03-01", 200.0, "2024-05-30"), ("C", "lead", "2024-03-01", 300.0, "2024-06-10"),
              ("D", "lead", "2024-03-01", 400.0, "2024-06-01"), ("D", "qualified", "2024-05-02", 400.0, "2024-08-01"),
              ("E", "lead", "2024-05-01", 50.0, "2024-06-30"), ("F", "lead", "2024-05-03", 70.0, "2024-05-20"),
              ("G", "lead", "2024-03-01", 80.0, "2024-09-01"), ("G", "qualified", "2024-05-05", 80.0, "2024-06-20"),
              ("G", "proposal", "2024-05-06", 60.0, "2024-06-20"), ("H", "lead", "2024-03-01", 999.0, "2024-04-10"),
              ("I", "lead", "2024-06-01", 5.0, "2024-07-10")]
    frame = pd.DataFrame(deals, columns=["deal_id", "created_at", "closed_at", "outcome", "amount"])
    ev = pd.DataFrame(events, columns=["deal_id", "stage", "entered_at", "amount", "expected_close_date"])
    for col in ("created_at", "closed_at"):
        frame[col] = pd.to_datetime(frame[col])
    for col in ("entered_at", "expected_close_date"):
        ev[col] = pd.to_datetime(ev[col])
    result = validate(frame, DatasetMeta(stages=["lead", "qualified", "proposal"]), stage_events=ev)
    return result.data


def test_every_movement_is_counted_once_with_its_value():
    moves = deal_changes(_history(), SINCE, UNTIL, *Q2)
    got = {k: (v["count"], v["value"]) for k, v in moves.items() if k != "without_amount"}
    assert got == {"new": (2, 120.0),  # E (open) and F (created and won since)
                   "won": (2, 270.0), "lost": (1, 300.0),  # B, F; C (H closed before: not counted)
                   "pushed": (1, 400.0),  # D: close in Q2 then, in Q3 now
                   "pulled_in": (1, 60.0),  # G: close in Q3 then, in Q2 now, at its amount now
                   "amount_up": (1, 50.0), "amount_down": (1, 20.0)}  # A 100 -> 150; G 80 -> 60
    assert moves["without_amount"] == 0


def test_nothing_moves_over_an_empty_interval():
    moves = deal_changes(_history(), UNTIL, UNTIL, *Q2)
    assert all(v["count"] == 0 for k, v in moves.items() if k != "without_amount")


def _rows(as_of: str, period_start: str, group_column: str = NO_GROUP, p50: float = 100.0) -> pd.DataFrame:
    start = T(period_start)
    return pd.DataFrame({"as_of": [T(as_of)], "period_start": [start], "period_end": [start + pd.DateOffset(months=3)],
                         "freq": ["quarter"], "group_column": [group_column], "group_value": ["(all)"],
                         "p10": [p50 - 10], "p50": [p50], "p90": [p50 + 10], "landing_p50": [p50],
                         "model_name": ["leadscore"], "model_version": ["1"]})


@pytest.fixture()
def store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    yield s
    s.close()


def test_previous_forecast_is_the_latest_earlier_one_of_the_same_period(store):
    for as_of, start, group, p50 in [("2024-04-01", "2024-04-01", NO_GROUP, 1.0), ("2024-04-20", "2024-04-01", NO_GROUP, 2.0),
                                     ("2024-04-25", "2024-04-01", "region", 3.0),  # another grouping
                                     ("2024-04-25", "2024-07-01", NO_GROUP, 4.0),  # another period
                                     ("2024-05-20", "2024-04-01", NO_GROUP, 5.0)]:  # this forecast itself
        record_forecasts(store, _rows(as_of, start, group, p50))
    prev = previous_forecast(store, UNTIL, "quarter", NO_GROUP, T("2024-04-01"))
    assert prev["as_of"].tolist() == [T("2024-04-20")] and prev["landing_p50"].tolist() == [2.0]
    assert previous_forecast(store, T("2024-04-01"), "quarter", NO_GROUP, T("2024-04-01")).empty

"""The track record on a tiny hand-checked store: the first forecast of each period and
horizon against realised bookings.

Monthly forecasts of the company total (landing = closed so far + the rest):
| as-of  | period | horizon | landing P10/P50/P90 | note                               |
| Dec 15 | Jan    | 1       | 80 / 100 / 120      | first at horizon 1                 |
| Dec 20 | Jan    | 1       | 190 / 200 / 210     | a later re-run: ignored            |
| Jan 10 | Jan    | 0       | 100 / 110 / 130     | stored landing (closed so far 40)  |
| Dec 15 | Feb    | 2       | 150 / 200 / 260     |                                    |
| Jan 10 | Feb    | 1       | 170 / 190 / 210     |                                    |
| Jan 10 | Mar    | 2       | 1 / 2 / 3           | March not closed: left out         |
| Feb 05 | Jan    | -1      | 0 / 0 / 0           | made after January: not a forecast |
Booked: January 104, February 250.
- horizon 0: Jan 110 vs 104: error +6 (5.8 %), in range.
- horizon 1: Jan 100 vs 104: -4 (3.8 %), in range; Feb 190 vs 250: -60 (24 %), out of range.
  WAPE 64 / 354, bias -64 / 354, within 5 % and 15 %: 1 of 2, hit rate 1 of 2.
- horizon 2: Feb 200 vs 250: -50 (20 %), in range: WAPE 0.2, bias -0.2, hit rate 1.
"""
from __future__ import annotations

import pandas as pd
import pytest
from store_rows import forecast_rows

from features.errors import LeadscoreError
from training.store.accuracy import forecast_accuracy
from training.store.forecasts import record_forecasts

MONTHS = {"Jan": ("2024-01-01", "2024-02-01"), "Feb": ("2024-02-01", "2024-03-01"), "Mar": ("2024-03-01", "2024-04-01")}


def _forecast(as_of: str, month: str, p10: float, p50: float, p90: float, **extra) -> pd.DataFrame:
    start, end = MONTHS[month]
    return forecast_rows(as_of=pd.Timestamp(as_of), period_start=pd.Timestamp(start), period_end=pd.Timestamp(end),
                         p10=p10, p50=p50, p90=p90, **extra)


@pytest.fixture
def track_record(store):
    record_forecasts(store, pd.concat([
        _forecast("2023-12-15", "Jan", 80, 100, 120), _forecast("2023-12-20", "Jan", 190, 200, 210),
        _forecast("2024-01-10", "Jan", 60, 70, 90, closed_so_far=40.0,
                  landing_p10=100.0, landing_p50=110.0, landing_p90=130.0),
        _forecast("2023-12-15", "Feb", 150, 200, 260), _forecast("2024-01-10", "Feb", 170, 190, 210),
        _forecast("2024-01-10", "Mar", 1, 2, 3), _forecast("2024-02-05", "Jan", 0, 0, 0),
        _forecast("2023-12-15", "Jan", 1, 1, 1, group_column="region", group_value="EU")]))
    return store


REALISED = pd.DataFrame({"period_start": pd.to_datetime(["2024-01-01", "2024-02-01"]),
                         "group_value": ["(all)", "(all)"], "booked": [104.0, 250.0]})


def test_the_first_forecast_of_each_period_and_horizon_is_scored(track_record):
    report = forecast_accuracy(track_record, REALISED, freq="month")
    by_horizon = {row["horizon"]: row for row in report["by_horizon"]}
    assert sorted(by_horizon) == [0, 1, 2]
    assert by_horizon[0] == pytest.approx({
        "group_value": "(all)", "horizon": 0, "periods": 1, "booked": 104.0, "wape": 6 / 104, "bias": 6 / 104,
        "within_5pct": 0.0, "within_15pct": 1.0, "p10_p90_hit_rate": 1.0})
    assert by_horizon[1] == pytest.approx({
        "group_value": "(all)", "horizon": 1, "periods": 2, "booked": 354.0, "wape": 64 / 354, "bias": -64 / 354,
        "within_5pct": 0.5, "within_15pct": 0.5, "p10_p90_hit_rate": 0.5})
    assert by_horizon[2] == pytest.approx({
        "group_value": "(all)", "horizon": 2, "periods": 1, "booked": 250.0, "wape": 0.2, "bias": -0.2,
        "within_5pct": 0.0, "within_15pct": 0.0, "p10_p90_hit_rate": 1.0})
    periods = pd.DataFrame(report["periods"])
    assert len(periods) == 4 and periods["landing_p50"].tolist() == [110.0, 100.0, 190.0, 200.0]
    assert periods["as_of"].str[:10].tolist() == ["2024-01-10", "2023-12-15", "2024-01-10", "2023-12-15"]


def test_a_grouped_track_record_is_kept_apart_from_the_company_total(track_record):
    realised = pd.DataFrame({"period_start": ["2024-01-01"], "group_value": ["EU"], "booked": [0.0]})
    report = forecast_accuracy(track_record, realised, freq="month", group_column="region")
    assert report["group_column"] == "region"
    [row] = report["by_horizon"]
    assert row["group_value"] == "EU" and row["horizon"] == 1 and row["periods"] == 1
    assert row["wape"] is None and row["within_15pct"] == 0.0  # nothing booked: a miss of 1, no ratio


def test_no_closed_period_gives_an_empty_record(track_record):
    report = forecast_accuracy(track_record, REALISED.iloc[:0], freq="quarter")
    assert report["by_horizon"] == [] and report["periods"] == []


def test_bad_inputs_say_what_to_give(track_record):
    with pytest.raises(LeadscoreError, match="booked"):
        forecast_accuracy(track_record, REALISED.drop(columns="booked"), freq="month")
    with pytest.raises(LeadscoreError, match="freq"):
        forecast_accuracy(track_record, REALISED, freq="fortnight")

"""Backtest: origins, baselines, metrics, and the oracle beating the naive baselines."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from features.errors import NotEnoughData
from features.jsonsafe import json_safe
from features.timetravel import truncate_at
from training.forecast.backtest import _naive, backtest, backtest_origins, metrics, stage_win_rates, weighted_pipeline
from training.forecast.bookings import BookingRule
from training.forecast.config import ForecastConfig


@pytest.fixture(scope="module")
def result(small_data, small_predictor):
    data, truth = small_data
    return backtest(data, "month", 4, truth=truth, predictor=small_predictor,
                    config=ForecastConfig(n_sims=300, seed=1), oracle_sims=150)


def test_origins_are_whole_past_periods(small_data):
    data = small_data[0]
    origins = backtest_origins(data, "month", 3)
    assert list(origins) == [pd.Timestamp("2024-10-01"), pd.Timestamp("2024-11-01"), pd.Timestamp("2024-12-01")]
    assert list(backtest_origins(data, "quarter", 2)) == [pd.Timestamp("2024-07-01"), pd.Timestamp("2024-10-01")]
    with pytest.raises(NotEnoughData, match="fewer origins"):
        backtest_origins(data, "month", 40)  # more whole months than the data has


def test_summary_has_the_required_keys(result):
    s = result["summary"]
    for block in [s["model"], s["oracle"], *s["baselines"].values()]:
        assert {"wape", "bias", "coverage_p10_p90", "pinball"} <= set(block)
    assert set(s["baselines"]) == {"weighted_pipeline", "run_rate_3", "seasonal_naive"}
    assert len(result["rows"]) == 4 and "reuse" in result["strategy"]
    json.dumps(json_safe(result))  # serialisable as the backtest command writes it


def test_oracle_beats_the_naive_baselines(result):
    s = result["summary"]
    assert s["oracle"]["wape"] < s["baselines"]["run_rate_3"]["wape"]
    assert s["oracle"]["wape"] < s["baselines"]["seasonal_naive"]["wape"]
    assert s["model"]["wape"] < s["baselines"]["weighted_pipeline"]["wape"]


def test_actuals_are_realised_won_amounts(small_data, result):
    deals = small_data[0].deals
    row = result["rows"][-1]
    won = deals.loc[(deals["outcome"] == "won") & (deals["closed_at"] >= row["origin"])
                    & (deals["closed_at"] < row["end"]), "amount"].sum()
    assert row["actual"] == pytest.approx(won)


def test_metrics_by_hand():
    m = metrics([100, 200], [110, 170], [90, 180], [100, 190], [120, 195])
    assert m["wape"] == pytest.approx(40 / 300)
    assert m["bias"] == pytest.approx(-20 / 300)
    assert m["coverage_p10_p90"] == 0.5  # 200 > 195
    first = np.mean([0.1 * 10, 0.0, 0.1 * 20])  # y=100 against 90/100/120: under, exact, over
    second = np.mean([0.1 * 20, 0.5 * 10, 0.9 * 5])  # y=200 above all three
    assert m["pinball"] == pytest.approx((first + second) / 2)


def test_naive_range_comes_from_its_past_errors():
    history = np.array([10.0, 20, 20, 20, 20, 20, 20, 20])
    out = _naive(history, lambda a, i: a[i - 1] if i >= 1 else np.nan)
    assert out["point"] == 20 and out["p10"] <= 20 <= out["p90"]
    short = _naive(history[:3], lambda a, i: a[i - 1] if i >= 1 else np.nan)
    assert np.isnan(short["p10"])  # too few past errors for a range


def test_stage_win_rates_by_hand(small_data):
    known = truncate_at(small_data[0], pd.Timestamp("2024-06-01"))
    rates = stage_win_rates(known)
    d, ev = known.deals, known.stage_events
    closed = d.loc[d["outcome"].isin(["won", "lost"])]
    stage = known.meta.stages[1]
    reached = closed.loc[closed["deal_id"].isin(ev.loc[ev["stage"] == stage, "deal_id"])]
    assert rates[stage] == pytest.approx((reached["outcome"] == "won").mean())
    assert rates[known.meta.stages[0]] == pytest.approx((closed["outcome"] == "won").mean())


def test_weighted_pipeline_reads_the_snapshot_state(small_data):
    from features.snapshots import deals_at

    origin, end = pd.Timestamp("2024-06-01"), pd.Timestamp("2024-07-01")
    known = truncate_at(small_data[0], origin)
    state = deals_at(known, origin)
    due = (state["expected_close_date"] >= origin) & (state["expected_close_date"] < end)
    rates = stage_win_rates(known)
    by_hand = float((state["amount"] * state["stage"].astype(str).map(rates))[due].sum())
    counted = float(state["stage"].astype(str).map(rates)[due].sum())
    assert weighted_pipeline(known, origin, end, BookingRule(1.0))["point"] == pytest.approx(by_hand)
    assert weighted_pipeline(known, origin, end, BookingRule(1.0, counts_deals=True))["point"] == pytest.approx(counted)


def test_actuals_value_unknown_amounts_like_the_forecast(small_data, small_predictor):
    """A won deal without an amount books the median won amount known at the origin
    (the forecast's rule), not 0."""
    from dataclasses import replace

    from training.forecast.bookings import booking_rule

    data = small_data[0]
    origin, end = pd.Timestamp("2024-12-01"), pd.Timestamp("2025-01-01")
    deals = data.deals.copy()
    won = ((deals["outcome"] == "won") & (deals["closed_at"] >= origin) & (deals["closed_at"] < end)).to_numpy()
    blank = won & (np.arange(len(deals)) % 2 == 0)
    deals.loc[blank, "amount"] = np.nan
    holes = replace(data, deals=deals)
    row = backtest(holes, "month", 1, predictor=small_predictor, config=ForecastConfig(n_sims=100))["rows"][0]
    fallback = booking_rule(truncate_at(holes, origin).deals, origin).fallback_amount
    assert blank.sum() > 0 and row["value_unit"] == "amount"
    assert row["actual"] == pytest.approx(deals.loc[won, "amount"].sum() + blank.sum() * fallback)

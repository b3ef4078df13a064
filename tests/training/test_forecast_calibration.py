"""Calibration of the forecast's ranges and bias factors from past periods out of sample."""
from __future__ import annotations

import copy

import pandas as pd
import pytest

from features.timetravel import truncate_at
from training.forecast.bookings import booking_rule
from training.forecast.calibration import estimate_shock, out_of_sample_from
from training.forecast.config import ForecastConfig

AS_OF = pd.Timestamp("2024-06-10")
CONFIG = ForecastConfig(n_sims=200, seed=1)


@pytest.fixture(scope="module")
def known(small_data):
    return truncate_at(small_data[0], AS_OF)


def _shock(predictor, known, freq: str = "month") -> dict:
    return estimate_shock(predictor, known, AS_OF, freq, CONFIG, booking_rule(known.deals, AS_OF))


def test_no_past_period_is_valued_by_a_model_trained_on_its_outcomes(small_predictor, known):
    # the close model's trees learned the train fold's labels, as known at this cutoff
    cutoff = pd.Timestamp(small_predictor.info["folds"]["train"]["labels_known_at"])
    assert out_of_sample_from(small_predictor) == cutoff
    shock = _shock(small_predictor, known)
    used = [pd.Timestamp(h["start"]) for h in shock["history"]]
    assert len(used) >= CONFIG.min_history_periods and min(used) >= cutoff
    assert shock["out_of_sample_from"] == cutoff.isoformat()

    # the same predictor without its fold record calibrates on every past period: the
    # in-sample ones are exactly those left out, and the rows kept are valued identically
    blind = copy.copy(small_predictor)
    blind.info = {}
    everything = _shock(blind, known)
    assert everything["out_of_sample_from"] is None and everything["in_sample_periods_left_out"] == 0
    starts = [pd.Timestamp(h["start"]) for h in everything["history"]]
    assert [s for s in starts if s >= cutoff] == used
    assert shock["in_sample_periods_left_out"] == len(starts) - len(used) > 0
    by_start = {h["start"]: h for h in everything["history"]}
    for h in shock["history"]:
        assert h["open_actual"] == by_start[h["start"]]["open_actual"]
    # when won deals close is learned from the same past periods' deals: the in-sample ones
    # inform the blind predictor's correction only (the kept rows are valued with each its own)
    assert 0 < shock["timing"]["won_rows"] < everything["timing"]["won_rows"]


def test_too_few_periods_out_of_sample_fall_back_to_every_past_period_and_say_so(small_predictor, known):
    # quarters: the last whole ones before the as-of date all start before the cutoff
    shock = _shock(small_predictor, known, "quarter")
    blind = copy.copy(small_predictor)
    blind.info = {}
    everything = _shock(blind, known, "quarter")
    assert shock["periods_used"] == everything["periods_used"] >= CONFIG.min_history_periods
    assert shock["relative_sd"] == everything["relative_sd"] and shock["open_factors"] == everything["open_factors"]
    assert shock["out_of_sample_from"] is None and shock["in_sample_periods_left_out"] == 0
    assert "trained on too" in shock["note"] and "note" not in everything

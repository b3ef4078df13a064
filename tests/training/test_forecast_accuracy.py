"""The forecast's accuracy on generated data, against the generator's own process (the
oracle), on two seeds: the parts the forecast learns from the calendar."""
from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest

from features.synthetic import generate_data, oracle_bookings
from features.timetravel import truncate_at
from training.forecast.newdeals import NewDealModel

DEALS = 10_000
SEEDS = (0, 1)
# quarter starts with a year and a rate window of history before them (24 generated months from 2023-01-01)
ORIGINS = ("2024-04-01", "2024-07-01", "2024-10-01")


@functools.lru_cache(maxsize=None)
def generated(seed: int):
    return generate_data(DEALS, seed=seed)


def new_deal_value(data, origin: pd.Timestamp, end: pd.Timestamp) -> float:
    """The forecast's expected value of the deals created in [origin, end) and won in it."""
    model = NewDealModel().fit(truncate_at(data, origin), origin)
    starts, ends = pd.DatetimeIndex([origin]), pd.DatetimeIndex([end])
    wins, window = model.expected_wins(starts, ends)[:, 0], model.windows(starts, ends)[0]
    return float(sum(wins[i] * model.mean_value(s, window) for i, s in enumerate(model.segments_)))


@pytest.mark.slow(reason="generates two 10,000-deal histories")
@pytest.mark.parametrize("seed", SEEDS)
def test_new_deals_follow_the_season_of_the_true_process(seed):
    """Deals not created yet are about half of a quarter's bookings, and their number and
    win rate move with the month of the year (generator: `month_factor`, `season_effect`).
    At each quarter with a year of history the forecast's expected new-deal bookings are
    within 20 % of the true process's (a quarter's new wins here: ~250, Poisson noise alone
    ~6 %, value noise ~5 %, the year-earlier window's noise as much again), and within
    10 % over the three quarters. A rate x cohort estimate from the last months, blind to
    the calendar, misses the fourth quarter by about a third."""
    data, truth = generated(seed)
    ratios = []
    for origin in map(pd.Timestamp, ORIGINS):
        end = (origin.to_period("Q") + 1).start_time
        oracle = oracle_bookings(truncate_at(data, origin), truth, origin, end, n_sims=50, seed=seed)["new_deals"]
        ratios.append(new_deal_value(data, origin, end) / oracle)
    ratios = np.array(ratios)
    assert (np.abs(ratios - 1) <= 0.20).all(), ratios
    assert abs(ratios.mean() - 1) <= 0.10, ratios

"""The forecast's stated accuracy on generated data: a 12-origin monthly backtest of 20,000
deals holds the bounds of benchmarks/bench_backtest_grid.py on two seeds (the full seeds x
sizes grid is that benchmark's table in benchmarks/RESULTS.md)."""
from __future__ import annotations

import functools

import pytest

from benchmarks.bench_backtest_grid import BOUNDS
from training.forecast.backtest import backtest
from training.forecast.config import ForecastConfig

DEALS = 20_000


@functools.lru_cache(maxsize=None)
def _generated(seed: int):
    from features.synthetic import generate_data

    return generate_data(DEALS, seed=seed)


@pytest.mark.slow(reason="trains a predictor per seed (backtest() trains at the first origin)")
@pytest.mark.parametrize("seed", [0, 1])
def test_a_generated_backtest_holds_the_stated_bounds(seed):
    data, truth = _generated(seed)
    summary = backtest(data, "month", 12, truth=truth, config=ForecastConfig(n_sims=1000), oracle_sims=300)["summary"]
    lo, hi = BOUNDS["coverage"]
    assert summary["model_wape_vs_oracle"] <= BOUNDS["oracle"], summary
    assert summary["model_wape_vs_best_baseline"] <= BOUNDS["baseline"], summary
    assert lo <= summary["model"]["coverage_p10_p90"] <= hi, summary

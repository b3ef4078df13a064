"""Small generated data and a predictor trained on it, built once per test process.

Plain cached functions (not fixtures) so every test package can wrap them in its own
fixture without training twice in one pytest run.
"""
from __future__ import annotations

import functools

SMALL_DEALS = 6000
SMALL_SEED = 7


@functools.lru_cache(maxsize=None)
def small_data(n_deals: int = SMALL_DEALS, seed: int = SMALL_SEED):
    """(CanonicalData, truth) of a small generated history (24 months)."""
    from features.synthetic import generate_data

    return generate_data(n_deals, seed=seed)


@functools.lru_cache(maxsize=None)
def small_train_result(n_deals: int = SMALL_DEALS, seed: int = SMALL_SEED):
    """A real LightGBM predictor (and its evaluation) trained on `small_data`."""
    from training.train import TrainConfig, fit_predictor

    data, _truth = small_data(n_deals, seed)
    return fit_predictor(data, TrainConfig(close_params={"learning_rate": 0.08},
                                           time_params={"learning_rate": 0.1}))


def small_predictor():
    return small_train_result().predictor

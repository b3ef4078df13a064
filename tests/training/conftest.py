"""Fixtures of the forecast and backtest tests: the cached small generated history and
the predictor trained on it (tests/models_cache.py, trained once per process)."""
from __future__ import annotations

import models_cache
import pytest


@pytest.fixture(scope="session")
def small_data():
    """(CanonicalData, truth) of the small generated history."""
    return models_cache.small_data()


@pytest.fixture(scope="session")
def small_predictor():
    return models_cache.small_train_result().predictor

"""The new-deal simulation's weighted draws (training/forecast/simulation.py)."""
import numpy as np

from training.forecast.simulation import _draw_by_period


def test_each_period_draws_with_its_own_weights():
    weights = np.array([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.25, 0.75], [0.0, 1.0, 0.0, 0.0]])
    k = np.repeat([0, 1, 2], 40_000)
    draws = _draw_by_period(weights, k, np.random.default_rng(3))
    for j in range(3):
        share = np.bincount(draws[k == j], minlength=4) / 40_000
        assert np.abs(share - weights[j]).max() < 0.01
        assert (share[weights[j] == 0] == 0).all()  # a zero weight is never drawn


def test_weights_that_do_not_sum_to_one_and_a_single_item():
    k = np.array([1, 0, 1, 1, 0])
    draws = _draw_by_period(np.array([[2.0], [3.0]]), k, np.random.default_rng(0))
    assert (draws == 0).all()
    draws = _draw_by_period(np.array([[0.0, 4.0], [4.0, 0.0]]), k, np.random.default_rng(0))
    assert list(draws) == [0, 1, 0, 0, 1]

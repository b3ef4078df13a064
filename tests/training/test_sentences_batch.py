"""The batch sentence writers (`numeric_many`, `times_in_stage`) write what the one-value
writers write, value by value: ties with grid points, zeros, values beyond the grid,
missing stage grids and velocities included."""
from __future__ import annotations

import numpy as np
import pytest

from training import sentences as say

GRID = np.quantile(np.r_[np.zeros(30), np.arange(1.0, 71.0)], np.linspace(0, 1, 101)).tolist()  # many ties at 0
VALUES = [0.0, 0, 1.0, 2.5, 7, 35.0, 69.99, 70.0, 1e6, -3.0, *GRID[::7]]


@pytest.mark.parametrize("feature", ["deal_age_days", "amount", "activities_7d", "account_prior_losses",
                                     "owner_closed_deals", "expected_close_overdue", "company_size"])
@pytest.mark.parametrize("grid", [GRID, None, []])
def test_numeric_many_writes_what_numeric_writes(feature, grid):
    one = say.numeric(feature, feature.replace("_", " "), grid)
    assert say.numeric_many(feature, feature.replace("_", " "), grid)(VALUES) == [one(v) for v in VALUES]


def test_times_in_stage_writes_what_time_in_stage_writes():
    grids = {"proposal": GRID, "lead": GRID[:50] + [GRID[49]] * 51}
    names = ["proposal", "lead", None, "negotiation", "proposal", "lead", "proposal"] * 3
    velocities = [1.8, None, 0.4, float("nan"), 3, 0.96, 1.0] * 3
    values = [0.0, 12.0, 35.0, 70.0, 1e4, 4.5, GRID[40]] * 3
    expected = [say.time_in_stage(v, n, s, grids.get(n) if n is not None else None)
                for v, n, s in zip(values, names, velocities)]
    assert say.times_in_stage(values, names, velocities, grids) == expected

"""The sorted-array primitives of the point-in-time engine (features/asof.py)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.asof import asof_positions, ffill_index, group_cumsum, group_starts, run_ends, run_starts, take


@pytest.mark.parametrize("strict", [False, True])
def test_asof_positions_agree_with_merge_asof(strict):
    rng = np.random.default_rng(0)
    keys = np.sort(rng.integers(0, 20, 300))
    times = (pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 50, 300), unit="D")).to_numpy()
    order = np.lexsort((times, keys))
    keys, times = keys[order], times[order].astype("datetime64[us]")
    qk = rng.integers(-1, 22, 500)  # -1 and 20, 21: keys with no rows
    qt = (pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(-5, 60, 500), unit="D")).to_numpy()
    qt = qt.astype("datetime64[us]")
    got = asof_positions(keys, times, qk, qt, strict=strict)
    right = pd.DataFrame({"k": keys, "t": times, "row": np.arange(len(keys))}).sort_values("t", kind="stable")
    left = pd.DataFrame({"k": qk, "t": qt, "i": np.arange(len(qk))}).sort_values("t")
    want = pd.merge_asof(left, right, on="t", by="k", allow_exact_matches=not strict).sort_values("i")
    np.testing.assert_array_equal(got, want["row"].fillna(-1).to_numpy(dtype="int64"))


def test_runs_fills_and_sums_within_runs():
    keys = np.array([3, 3, 5, 7, 7, 7])
    assert list(run_starts(keys)) == [True, False, True, True, False, False]
    assert list(run_ends(keys)) == [False, True, True, False, False, True]
    start = group_starts(keys)
    assert list(start) == [0, 0, 2, 3, 3, 3]
    assert list(group_cumsum(np.array([1.0, 2, 4, 1, 1, 1]), start)) == [1, 3, 4, 1, 2, 3]
    valid = np.array([False, True, False, False, True, False])
    idx = ffill_index(valid, start)
    assert list(idx) == [-1, 1, -1, -1, 4, 4]  # never fills across a run
    assert np.isnan(take(np.arange(6.0), idx)[0]) and take(np.arange(6.0), idx)[5] == 4


def test_empty_arrays():
    empty = np.zeros(0, "int64")
    assert len(run_starts(empty)) == len(run_ends(empty)) == len(group_starts(empty)) == 0
    assert len(group_cumsum(np.zeros(0), empty)) == 0
    assert len(ffill_index(np.zeros(0, bool), empty)) == 0
    assert list(asof_positions(empty, np.zeros(0, "datetime64[us]"), np.array([0]),
                               np.array(["2024-01-01"], dtype="datetime64[us]"))) == [-1]

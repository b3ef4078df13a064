"""History lookups (numpy, with each table's half of the as-of search in its `TableIndex`) against a
brute-force scan, and the small-table helpers of validation against pandas."""
from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from features import history as hist
from features.validation import _sorted_by_deal


def _table(rng, n_codes=5, n_rows=60) -> hist.GroupTable:
    codes = rng.integers(0, n_codes, n_rows)
    at = pd.Timestamp("2024-01-01").to_datetime64() + rng.integers(0, 40, n_rows).astype("timedelta64[D]")
    return hist._cumulative(pd.Index([f"g{i}" for i in range(n_codes)], dtype="string"), codes, at,
                            {"won": rng.random(n_rows), "lost": rng.random(n_rows)})


def _brute(table: hist.GroupTable, code: int, t: np.datetime64, strict: bool) -> dict:
    rows = table.table
    ok = (rows["code"] == code) & ((rows["at"] < t) if strict else (rows["at"] <= t))
    if not ok.any():
        return {"won": np.nan, "lost": np.nan}
    last = rows.loc[ok].iloc[-1]
    return {"won": last["won"], "lost": last["lost"]}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("strict", [True, False])
def test_lookup_matches_a_brute_force_scan(seed, strict):
    rng = np.random.default_rng(seed)
    table = _table(rng)
    codes = rng.integers(-1, 7, 80)  # unseen (-1) and out-of-range codes have no history
    at = pd.Timestamp("2023-12-25").to_datetime64() + rng.integers(0, 55, 80).astype("timedelta64[D]")
    found = hist.lookup(table.search_index(), codes, at.astype("datetime64[us]"), strict=strict)
    for i, (code, t) in enumerate(zip(codes, at)):
        want = _brute(table, code, t, strict)
        for name in ("won", "lost"):
            np.testing.assert_equal(found[name][i], want[name])


def test_lookup_on_an_empty_table_finds_nothing():
    empty = hist._cumulative(pd.Index(["a"], dtype="string"), np.zeros(0, "int64"),
                             np.zeros(0, "datetime64[us]"), {"won": np.zeros(0)})
    found = hist.lookup(empty.search_index(), np.array([0, -1]), np.array(["2024-01-01"] * 2, dtype="datetime64[us]"), strict=True)
    assert np.isnan(found["won"]).all()


def test_a_pickled_table_looks_up_the_same():
    table = _table(np.random.default_rng(0))
    query = (np.array([0, 1, 4]), np.array(["2024-01-20"] * 3, dtype="datetime64[us]"))
    before = hist.lookup(table.search_index(), *query, strict=False)
    after = hist.lookup(pickle.loads(pickle.dumps(table)).search_index(), *query, strict=False)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name])


@pytest.mark.parametrize("with_missing", [False, True])
def test_sorted_by_deal_is_a_stable_sort_by_deal_and_time(with_missing):
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"deal_id": pd.array(rng.choice(["b", "a", "c", "a10"], 50), dtype="string"),
                          "entered_at": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 5, 50), "D"),
                          "n": np.arange(50)})
    frame["entered_at"] = frame["entered_at"].astype("datetime64[us]")
    if with_missing:
        frame.loc[[3, 7], "deal_id"] = pd.NA
        frame.loc[[5], "entered_at"] = pd.NaT
    want = frame.sort_values(["deal_id", "entered_at"], kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(_sorted_by_deal(frame, "entered_at"), want)


def test_one_search_over_stacked_tables_equals_a_search_per_table():
    import models_cache

    from features.build import FeatureBuilder

    data = models_cache.small_data()[0]
    builder = FeatureBuilder().fit(data)
    h, columns = builder.history_, builder.group_columns_
    rng = np.random.default_rng(3)
    n = 500
    at = (data.data_end - pd.to_timedelta(rng.integers(0, 800, n), unit="D")).to_numpy().astype("datetime64[us]")
    at[:5] = np.datetime64("1990-01-01")  # before any history
    codes = [rng.integers(-1, len(h.groups[c].levels), n) for c in columns]
    outcomes, groups = hist.lookup_groups(hist.StackedIndex.of(h, columns), codes, at)
    want = hist.lookup(h.outcomes.search_index(), np.zeros(n, "int64"), at, strict=True)
    for name in ("won", "lost"):
        np.testing.assert_array_equal(outcomes[name], want[name])
    for i, (col, c) in enumerate(zip(columns, codes)):
        want = hist.lookup(h.groups[col].search_index(), c, at, strict=True)
        for name in ("won", "lost", "won_amount"):
            np.testing.assert_array_equal(groups[name][i], want[name], err_msg=f"{col}.{name}")

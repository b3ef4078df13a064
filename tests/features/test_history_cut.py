"""History tables cut to a job's as-of dates (`features.history_cut`, `FeatureBuilder.for_dates`):
every lookup at those dates returns what the full tables return, in far fewer rows."""
from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from features import history as hist
from features.build import FeatureBuilder, build_training_set
from features.history_cut import HistoryCutError, as_of_dates, cut_history, cut_table, cut_table_from
from features.snapshots import as_of_grid
from features.synthetic import generate_data

DAY = np.timedelta64(1, "D")
START = np.datetime64("2024-01-01T00:00:00", "ns")


def _table(rng, n_codes: int = 6, n_rows: int = 400) -> hist.GroupTable:
    codes = rng.integers(0, n_codes, n_rows)
    at = START + rng.integers(0, 60, n_rows) * DAY  # whole days: as-of dates fall on table times (ties)
    return hist._cumulative(pd.Index([f"g{i}" for i in range(n_codes)], dtype="string"), codes, at,
                            {"won": rng.random(n_rows), "lost": rng.random(n_rows)})


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("strict", [True, False])
def test_a_cut_table_answers_its_dates_as_the_full_table(seed, strict):
    rng = np.random.default_rng(seed)
    table = _table(rng)
    # before every row, on row times, between them, after every row
    dates = as_of_dates(START + np.array([-3, 0, 7, 20, 21, 45, 59, 80]) * DAY)
    cut = cut_table(table, dates)
    assert len(cut.table) < len(table.table) / 4
    codes = np.repeat(np.arange(-1, 8), len(dates))  # unseen (-1) and out-of-range codes too
    at = np.tile(dates, 9)
    full = hist.lookup(table.search_index(), codes, at, strict=strict)
    got = hist.lookup(cut.search_index(), codes, at, strict=strict)
    for name in full:
        np.testing.assert_array_equal(got[name], full[name])


def test_a_cut_table_keeps_the_last_row_at_or_before_and_the_last_row_before_each_date():
    at = START + np.array([0, 5, 10, 10, 20]) * DAY
    table = hist._cumulative(pd.Index(["a"], dtype="string"), np.zeros(5, "int64"), at, {"won": np.ones(5)})
    cut = cut_table(table, as_of_dates([START + 10 * DAY]))
    assert list(cut.table["won"]) == [2.0, 4.0]  # < day 10: the row of day 5; <= day 10: day 10's last row


@pytest.fixture(scope="module")
def fitted():
    data = generate_data(1500, seed=5)[0]
    return data, FeatureBuilder().fit(data)


@pytest.mark.parametrize("dates", [["2023-09-04", "2024-03-04", "2024-09-02"], "grid"])
def test_features_of_a_builder_cut_to_the_dates_equal_the_full_builders(fitted, dates):
    data, builder = fitted
    dates = as_of_grid(data) if dates == "grid" else dates
    cut = builder.for_dates(dates)
    pd.testing.assert_frame_equal(cut.transform(data, dates), builder.transform(data, dates), check_exact=True)
    assert len(pickle.dumps(cut)) < len(pickle.dumps(builder)) / 2
    assert builder.history_.as_of is None  # the fitted builder itself is left whole


def test_the_training_set_is_built_with_the_cut_tables_and_returns_the_full_builder(fitted):
    data, builder = fitted
    dates = ["2023-09-04", "2024-03-04"]
    X, _, returned = build_training_set(data, dates, builder)
    assert returned is builder
    pd.testing.assert_frame_equal(X, builder.transform(data, dates), check_exact=True)


def test_a_cut_builder_refuses_other_dates(fitted):
    data, builder = fitted
    cut = builder.for_dates(["2023-09-04", "2024-03-04"])
    with pytest.raises(ValueError, match="cut to the as-of dates 2023-09-04, 2024-03-04"):
        cut.transform(data, ["2024-03-05"])
    assert len(cut.for_dates(["2024-03-04"]).transform(data, ["2024-03-04"]))  # a subset of its dates: fine
    with pytest.raises(ValueError, match="already cut to other as-of dates"):
        cut_history(cut.history_, ["2024-06-03"])


def _tables(history: hist.History) -> list[hist.GroupTable]:
    return [t for t in (history.outcomes, history.dwell, history.open_load, *history.groups.values()) if t is not None]


@pytest.mark.parametrize("seed", range(3))
def test_a_table_cut_from_a_date_then_from_a_later_one_keeps_the_rows_of_the_full_table_cut_from_it(seed):
    table = _table(np.random.default_rng(seed))
    for first, then in [(20, 40), (40, 40), (0, 59)]:
        twice = cut_table_from(cut_table_from(table, START + first * DAY), START + then * DAY)
        pd.testing.assert_frame_equal(twice.table, cut_table_from(table, START + then * DAY).table, check_exact=True)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("strict", [True, False])
def test_a_table_cut_from_a_date_answers_every_later_date_as_the_full_table(seed, strict):
    rng = np.random.default_rng(seed)
    table = _table(rng)
    start = START + 40 * DAY
    cut = cut_table_from(table, start)
    assert len(cut.table) < len(table.table) / 2
    dates = START + np.array([40, 41, 45, 52, 59, 60, 90]) * DAY  # on the start, on row times, after every row
    codes = np.repeat(np.arange(-1, 8), len(dates))
    at = np.tile(dates, 9)
    full = hist.lookup(table.search_index(), codes, at, strict=strict)
    got = hist.lookup(cut.search_index(), codes, at, strict=strict)
    for name in full:
        np.testing.assert_array_equal(got[name], full[name])
    assert not np.array_equal(hist.lookup(cut.search_index(), codes, at - 20 * DAY, strict=strict)["won"],
                              hist.lookup(table.search_index(), codes, at - 20 * DAY, strict=strict)["won"])


def test_a_builder_cut_from_its_data_end_scores_that_date_and_later_as_the_full_one(fitted):
    """What `train --cluster` registers: the same features from the data end on (the end,
    later dates), a fraction of the size, and a one-line refusal of earlier dates."""
    data, builder = fitted
    end = data.data_end
    cut = builder.from_date(end)
    for at in ([end], [end + pd.Timedelta(days=1), end + pd.Timedelta(days=90)]):
        pd.testing.assert_frame_equal(cut.transform(data, at), builder.transform(data, at), check_exact=True)
    assert len(pickle.dumps(cut)) < len(pickle.dumps(builder)) / 3
    assert builder.history_.answers_from is None  # the fitted builder itself is left whole
    with pytest.raises(HistoryCutError, match=f"as-of 2024-06-03 is before {str(end)[:10]}: this model's history"):
        cut.transform(data, ["2024-06-03", end])
    with pytest.raises(ValueError, match="already cut"):
        cut.from_date(end - pd.Timedelta(days=1))
    # cut again from a later date (the command cuts what `train --cluster`'s worker cut): the same
    # tables as the full builder cut from that date, row for row
    later, again = end + pd.Timedelta(days=30), cut.from_date(end + pd.Timedelta(days=30))
    assert again.history_.answers_from == builder.from_date(later).history_.answers_from == later
    for got, full in zip(_tables(again.history_), _tables(builder.from_date(later).history_), strict=True):
        pd.testing.assert_frame_equal(got.table, full.table, check_exact=True)
    # what `score --cluster` sends the workers: cut again to the scoring date (`predictor_at`)
    later = [end + pd.Timedelta(days=7)]
    pd.testing.assert_frame_equal(cut.for_dates(later).transform(data, later), builder.transform(data, later),
                                  check_exact=True)
    with pytest.raises(HistoryCutError, match="is before"):
        cut.for_dates(["2024-06-03"])

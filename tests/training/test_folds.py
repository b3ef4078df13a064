"""Time folds: ordered, non-overlapping, separated by the gap, and no label crosses a
fold boundary (a row's label is what was known at the next fold's start; rows still open
then are censored, never lost). Hand-built tables, a hypothesis property test, and the
same guarantee on the training set `training.train` builds from a generated history."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.errors import NotEnoughData
from features.labels import make_labels
from features.staleness import lost_at_cutoff
from features.synthetic import generate_data
from features.timetravel import truncate_at
from training.folds import (
    FOLDS,
    MIN_GAP_DAYS,
    THREE_FOLDS,
    assign_folds,
    fold_plans,
    make_time_folds,
    stratified_folds,
    won_as_known_at,
)
from training.train import TrainConfig, _check_folds, _fold_labels, _training_set

FIRST = pd.Timestamp("2023-01-02")
LAST = pd.Timestamp("2024-07-01")
DATA_END = pd.Timestamp("2024-09-01")
GAP = pd.Timedelta(days=45)
MIN_USABLE = pd.Timedelta(days=28 * 4)  # make_time_folds refuses a usable span up to this


def nat_equal(a, b) -> bool:
    """Element-wise equality of two float arrays where NaN equals NaN."""
    return bool(np.array_equal(np.asarray(a, dtype="float64"), np.asarray(b, dtype="float64"), equal_nan=True))


def assert_fold_geometry(folds, first: pd.Timestamp, last: pd.Timestamp, data_end: pd.Timestamp,
                         gap: pd.Timedelta) -> None:
    """Ordered, non-overlapping, gap-separated folds covering [first, last], labels known
    at the next fold's start (the last fold's at the end of the data)."""
    assert folds.starts[0] == first
    assert abs(folds.ends[-1] - last) < pd.Timedelta(seconds=1)
    for k in range(len(FOLDS)):
        assert folds.starts[k] < folds.ends[k]
    for k in range(len(FOLDS) - 1):
        assert folds.starts[k + 1] - folds.ends[k] == gap
        assert folds.label_cutoffs[k] == folds.starts[k + 1]
    assert folds.label_cutoffs[-1] == data_end


# --- make_time_folds -------------------------------------------------------------------

def test_folds_are_ordered_gapped_and_labelled_at_the_next_start():
    folds = make_time_folds(FIRST, LAST, DATA_END, gap_days=45)
    assert_fold_geometry(folds, FIRST, LAST, DATA_END, GAP)
    usable = (LAST - FIRST) - 3 * GAP
    lengths = [(e - s) / usable for s, e in zip(folds.starts, folds.ends)]
    assert lengths == pytest.approx([0.6, 0.13, 0.12, 0.15])
    assert list(folds.to_dict()) == list(FOLDS)
    assert folds.to_dict()["train"]["labels_known_at"] == folds.starts[1].isoformat()


def test_custom_fractions_and_no_gap():
    folds = make_time_folds(FIRST, LAST, DATA_END, fractions=(1, 1, 1, 1), gap_days=0)
    assert_fold_geometry(folds, FIRST, LAST, DATA_END, pd.Timedelta(0))
    lengths = {e - s for s, e in zip(folds.starts, folds.ends)}
    assert max(lengths) - min(lengths) < pd.Timedelta(seconds=1)


@pytest.mark.parametrize("first, last, gap_days", [
    (FIRST, FIRST + 3 * GAP + MIN_USABLE, 45),                 # exactly the minimum: still too short
    (FIRST, FIRST + pd.Timedelta(days=200), 45),                # the gaps eat the span
    (FIRST, FIRST, 0),                                          # a single as-of date
    (LAST, FIRST, 45),                                          # reversed
])
def test_too_short_a_span_is_not_enough_data(first, last, gap_days):
    with pytest.raises(NotEnoughData, match="too short for four time folds.*lower the gap"):
        make_time_folds(first, last, DATA_END, gap_days=gap_days)


def test_one_day_more_than_the_minimum_is_enough():
    last = FIRST + 3 * GAP + MIN_USABLE + pd.Timedelta(days=1)
    assert_fold_geometry(make_time_folds(FIRST, last, DATA_END, gap_days=45), FIRST, last, DATA_END, GAP)


# --- assign_folds and won_as_known_at on a hand-built table ---------------------------

def test_assign_folds_start_inclusive_end_exclusive_gaps_empty():
    folds = make_time_folds(FIRST, LAST, DATA_END, gap_days=45)
    tick = pd.Timedelta(microseconds=1)
    as_of = pd.Series([FIRST - tick, FIRST, folds.ends[0] - tick, folds.ends[0], folds.starts[1] - tick,
                       folds.starts[1], folds.starts[3], folds.ends[3] - tick, folds.ends[3] + tick, pd.NaT],
                      index=list("abcdefghij"), dtype="datetime64[us]")
    got = assign_folds(as_of, folds)
    assert got.dtype == "string" and list(got.index) == list(as_of.index)
    assert got.tolist() == ["", "train", "train", "", "", "valid", "test", "test", "", ""]


def test_won_is_known_only_for_deals_closed_by_the_cutoff():
    cutoff = pd.Timestamp("2024-03-01")
    deals = pd.DataFrame({
        "won": [1.0, 0.0, 1.0, 0.0, 1.0, np.nan],
        "closed_at": pd.to_datetime(["2024-01-10 00:00", "2024-02-29 23:59", "2024-03-01 00:00",
                                     "2024-03-01 00:01", "2024-06-01 00:00", None]),
    }, index=[10, 11, 12, 13, 14, 15])
    got = won_as_known_at(deals[["won"]], deals["closed_at"], cutoff)
    assert list(got.index) == list(deals.index)
    # closed before or at the cutoff: known; closed after it or still open: censored (NaN, not lost)
    assert nat_equal(got, [1.0, 0.0, 1.0, np.nan, np.nan, np.nan])


# --- property: any span, gap and as-of dates ------------------------------------------

DAYS = st.integers(min_value=0, max_value=2500)


@settings(max_examples=150, deadline=None)
@given(start_day=st.integers(min_value=0, max_value=5000), span_days=DAYS, gap_days=st.integers(0, 120),
       tail_days=st.integers(0, 200),
       fractions=st.tuples(*[st.floats(0.05, 1.0) for _ in FOLDS]),
       rows=st.lists(st.tuples(st.floats(-0.1, 1.1), st.floats(0.0, 3.0) | st.none(), st.booleans()),
                     min_size=1, max_size=60))
def test_no_label_crosses_a_fold_boundary(start_day, span_days, gap_days, tail_days, fractions, rows):
    first = pd.Timestamp("2015-01-01") + pd.Timedelta(days=start_day)
    last = first + pd.Timedelta(days=span_days)
    data_end = last + pd.Timedelta(days=tail_days)
    gap = pd.Timedelta(days=gap_days)
    if (last - first) - 3 * gap <= MIN_USABLE:
        with pytest.raises(NotEnoughData):
            make_time_folds(first, last, data_end, fractions=fractions, gap_days=gap_days)
        return
    folds = make_time_folds(first, last, data_end, fractions=fractions, gap_days=gap_days)
    assert_fold_geometry(folds, first, last, data_end, gap)

    span = last - first
    as_of = pd.Series([first + span * r for r, _, _ in rows], dtype="datetime64[us]")
    # a close some time after the as-of date (or never: still open)
    closed_at = pd.Series([t + span * c if c is not None else pd.NaT for t, (_, c, _) in zip(as_of, rows)],
                          dtype="datetime64[us]")
    labels = pd.DataFrame({"won": [float(w) if c is not None else np.nan for _, c, w in rows]})
    fold = assign_folds(as_of, folds)
    for k, name in enumerate(FOLDS):
        rows_k = (fold == name).to_numpy()
        inside = ((as_of >= folds.starts[k]) & (as_of < folds.ends[k])).to_numpy()
        assert (rows_k == inside).all()
        cutoff = folds.label_cutoffs[k]
        if k < len(FOLDS) - 1:  # every row of a fold had at least the gap to resolve
            assert (as_of[rows_k] + gap <= cutoff).all()
        y = won_as_known_at(labels[rows_k], closed_at[rows_k], cutoff)
        known = y.notna().to_numpy()
        assert (closed_at[rows_k][known] <= cutoff).all()  # no label uses a close after the cutoff
        assert not (closed_at[rows_k][~known] <= cutoff).any()  # and every close by then is used
        assert nat_equal(y[known], labels["won"][rows_k][known])
    in_gap = (fold == "").to_numpy()
    assert not any(((as_of[in_gap] >= s) & (as_of[in_gap] < e)).any() for s, e in zip(folds.starts, folds.ends))


# --- stratified_folds (static mode) ---------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(n_pos=st.integers(0, 400), n_neg=st.integers(0, 400), seed=st.integers(0, 2**32 - 1))
def test_stratified_folds_keep_each_class_in_proportion(n_pos, n_neg, seed):
    y = np.random.default_rng(seed).permutation(np.r_[np.ones(n_pos), np.zeros(n_neg)])
    fractions = np.array([0.6, 0.15, 0.1, 0.15])
    folds = stratified_folds(y, seed=seed)
    assert len(folds) == len(y) and set(folds) <= set(FOLDS)
    for cls, n in ((1.0, n_pos), (0.0, n_neg)):
        counts = folds[y == cls].value_counts().reindex(list(FOLDS), fill_value=0).to_numpy()
        assert counts.sum() == n
        assert (np.abs(counts - fractions * n) <= 1).all()


def test_stratified_folds_reproduce_by_seed():
    y = (np.random.default_rng(0).random(1000) < 0.3).astype(int)
    a, b, c = stratified_folds(y, seed=1), stratified_folds(y, seed=1), stratified_folds(y, seed=2)
    pd.testing.assert_series_equal(a, b)
    assert (a != c).any()
    assert a.value_counts().to_dict() == c.value_counts().to_dict()  # same sizes, other rows


# --- the guarantee on the training set of training.train -----------------------------

@pytest.fixture(scope="module")
def training_set():
    data, _truth = generate_data(1500, seed=3)
    config = TrainConfig()
    feats, labels, _builder, folds = _training_set(data, config)
    return data, config, feats, labels, folds, _fold_labels(data, feats, labels, folds)


def test_training_rows_sit_inside_their_fold_and_leave_the_gap(training_set):
    _data, config, feats, _labels, folds, _fold_y = training_set
    gap = pd.Timedelta(days=config.gap_days)
    for k, name in enumerate(FOLDS):
        as_of = feats.loc[(feats["fold"] == name).to_numpy(), "as_of"]
        assert len(as_of) and (as_of >= folds.starts[k]).all() and (as_of < folds.ends[k]).all()
        if k < len(FOLDS) - 1:
            assert (as_of + gap <= folds.label_cutoffs[k]).all()
    in_gap = feats.loc[(feats["fold"] == "").to_numpy(), "as_of"]
    assert len(in_gap) and not any(((in_gap >= s) & (in_gap < e)).any() for s, e in zip(folds.starts, folds.ends))


def test_fold_labels_are_the_labels_known_at_the_next_folds_start(training_set):
    data, _config, feats, labels, folds, fold_y = training_set
    censored_here = 0
    for name, cutoff in zip(FOLDS, folds.label_cutoffs):
        rows = (feats["fold"] == name).to_numpy()
        known = truncate_at(data, cutoff)
        as_known = make_labels(known, feats.loc[rows, ["deal_id", "as_of"]])
        # open past the give-up age at the cutoff: lost, from what was known then only
        given_up = lost_at_cutoff(known.deals, feats.loc[rows, "deal_id"], cutoff)
        assert nat_equal(fold_y[rows], as_known["won"].mask(given_up, 0.0))
        # rows that closed after the cutoff are censored for this fold, not lost
        censored_here += int((fold_y[rows].isna() & labels.loc[rows, "won"].notna()).sum())
    assert censored_here > 0
    assert fold_y[(feats["fold"] == "").to_numpy()].isna().all()


def test_rewriting_outcomes_after_a_fold_leaves_its_labels_unchanged(training_set):
    data, config, _feats, _labels, folds, fold_y = training_set
    later = (data.deals["closed_at"] > folds.label_cutoffs[0]).to_numpy()
    flipped = data.deals.copy()
    flipped.loc[later, "outcome"] = flipped.loc[later, "outcome"].map({"won": "lost", "lost": "won"})
    other = replace(data, deals=flipped)
    feats2, labels2, _builder, folds2 = _training_set(other, config)
    fold_y2 = _fold_labels(other, feats2, labels2, folds2)
    train = (feats2["fold"] == "train").to_numpy()
    assert folds2 == folds and nat_equal(fold_y2[train], fold_y[train])
    assert not nat_equal(fold_y2[~train], fold_y[~train])  # the later folds did see the change


def test_a_fold_without_both_outcomes_is_not_enough_data(training_set):
    _data, _config, feats, _labels, folds, fold_y = training_set
    one_sided = fold_y.where((feats["fold"] != "calib").to_numpy() | (fold_y != 0).to_numpy())
    _check_folds(feats, fold_y, folds)
    with pytest.raises(NotEnoughData, match="the calib fold .* too few outcomes"):
        _check_folds(feats, one_sided, folds)


def test_a_short_history_gets_three_folds_and_a_shorter_gap_which_it_states():
    data, _truth = generate_data(300, seed=1, months=6)
    feats, _labels, _builder, folds = _training_set(data, TrainConfig())
    assert folds.names == THREE_FOLDS and folds.calib_fold == "valid"
    assert MIN_GAP_DAYS <= folds.gap_days < 45
    assert folds.starts[1] - folds.ends[0] == pd.Timedelta(days=folds.gap_days)
    assert folds.plan()["n_folds"] == 3 and "shortened from 45 to" in folds.plan()["notes"][0]
    assert set(feats["fold"]) <= {"", *THREE_FOLDS}


def test_a_history_too_short_for_any_folds_is_not_enough_data():
    data, _truth = generate_data(100, seed=1, months=3)
    with pytest.raises(NotEnoughData, match="too short for time folds"):
        _training_set(data, TrainConfig())


def test_fold_plans_go_from_the_asked_plan_to_three_folds_then_shorter_gaps():
    plans = fold_plans(45)
    assert plans[0] == (FOLDS, 45, "")
    assert plans[1][:2] == (THREE_FOLDS, 45) and "three folds" in plans[1][2]
    assert [gap for _names, gap, _note in plans[2:]] == list(range(44, MIN_GAP_DAYS - 1, -1))
    assert fold_plans(MIN_GAP_DAYS)[2:] == []


def test_three_folds_keep_the_geometry():
    folds = make_time_folds(FIRST, LAST, DATA_END, gap_days=30, names=THREE_FOLDS)
    assert folds.names == THREE_FOLDS and folds.test_start == folds.starts[-1]
    assert folds.label_cutoffs == (folds.starts[1], folds.starts[2], DATA_END)
    assert list(folds.to_dict()) == list(THREE_FOLDS)
    with pytest.raises(NotEnoughData, match="too short for three time folds"):
        make_time_folds(FIRST, FIRST + pd.Timedelta(days=100), DATA_END, gap_days=10, names=THREE_FOLDS)

"""truncate_at: the dataset as known at a past date, and features unchanged by the future."""
from __future__ import annotations

import models_cache
import numpy as np
import pandas as pd
import pytest

from features.build import FeatureBuilder
from features.dates import InvalidDate
from features.timetravel import truncate_at

AT = pd.Timestamp("2024-03-15 12:00")


@pytest.fixture(scope="module")
def data():
    return models_cache.small_data()[0]


def test_truncate_keeps_only_what_was_known(data):
    cut = truncate_at(data, AT)
    assert cut.meta.data_end == AT
    assert (cut.deals["created_at"] <= AT).all()
    assert len(cut.deals) == int((data.deals["created_at"] <= AT).sum())
    assert not (cut.deals["closed_at"] > AT).any()
    assert (cut.deals["outcome"].isna() == cut.deals["closed_at"].isna()).all()
    assert (cut.stage_events["entered_at"] <= AT).all() and (cut.activities["occurred_at"] <= AT).all()
    # a deal closed after AT is open in the cut, and its outcome is gone
    later = data.deals.loc[(data.deals["created_at"] <= AT) & (data.deals["closed_at"] > AT), "deal_id"]
    assert len(later) > 0
    assert cut.deals.set_index("deal_id").loc[later, "outcome"].isna().all()


def test_amount_is_the_last_one_recorded_by_then(data):
    cut = truncate_at(data, AT)
    ev = data.stage_events.loc[data.stage_events["entered_at"] <= AT].sort_values("entered_at", kind="stable")
    expected = ev.groupby("deal_id")["amount"].last()
    got = cut.deals.set_index("deal_id")["amount"]
    np.testing.assert_allclose(got.reindex(expected.index).to_numpy(), expected.to_numpy())
    # the amount changed after AT for some deals, and the cut does not show the later one
    final = data.deals.set_index("deal_id")["amount"].reindex(expected.index)
    assert (final != expected).any()


def test_truncating_twice_is_truncating_once(data):
    twice = truncate_at(truncate_at(data, AT + pd.Timedelta(days=40)), AT)
    once = truncate_at(data, AT)
    pd.testing.assert_frame_equal(twice.deals, once.deals)
    pd.testing.assert_frame_equal(twice.stage_events, once.stage_events)
    pd.testing.assert_frame_equal(twice.activities, once.activities)


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Categoricals as strings: the cut knows fewer levels (owners hired later), same values."""
    out = frame.copy()
    for col in out.columns:
        if isinstance(out[col].dtype, pd.CategoricalDtype):
            out[col] = out[col].astype("string")
    return out.reset_index(drop=True)


def test_features_at_or_before_the_cut_are_identical(data):
    as_of = [AT - pd.Timedelta(days=60), AT - pd.Timedelta(days=7), AT]
    full = FeatureBuilder().fit(data).transform(data, as_of)
    cut_data = truncate_at(data, AT)
    cut = FeatureBuilder().fit(cut_data).transform(cut_data, as_of)
    assert len(full) > 100
    pd.testing.assert_frame_equal(_plain(full), _plain(cut), check_dtype=False)


def test_bad_cut_date_is_a_clear_error(data):
    with pytest.raises(InvalidDate, match="cut-off date: .* is not a date"):
        truncate_at(data, "yesterday-ish")

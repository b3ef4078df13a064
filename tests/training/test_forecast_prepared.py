"""The prepared forecast state: the same forecast as without it, and a cache that a new dataset invalidates."""
from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

from features.errors import LeadscoreError
from training.forecast.cache import PreparedCache
from training.forecast.config import ForecastConfig
from training.forecast.outlook import outlook
from training.forecast.prepared import prepare

AS_OF = pd.Timestamp("2024-06-10")
FAST = ForecastConfig(n_sims=300, seed=5)


@pytest.fixture(scope="module")
def prepared(small_data, small_predictor):
    return prepare(small_predictor, small_data[0], AS_OF, "month", "region", FAST)


def test_a_prepared_forecast_equals_one_made_from_scratch(small_data, small_predictor, prepared):
    data = small_data[0]
    fresh = outlook(small_predictor, data, AS_OF, periods=2, group_by="region", config=FAST)
    for periods in (2, 1):  # the same state serves any number of periods
        reused = outlook(small_predictor, data, AS_OF, periods=periods, group_by="region", config=FAST,
                         prepared=prepared)
        if periods == 2:
            pd.testing.assert_frame_equal(fresh.forecast.table, reused.forecast.table)
            pd.testing.assert_frame_equal(fresh.risk, reused.risk)
            assert fresh.forecast.shock == reused.forecast.shock
        assert list(reused.forecast.table["period"].unique()) == ["2024-06", "2024-07"][:periods]
    assert prepared.scored.deals.columns.tolist().count("group") == 0  # reusing it never wrote into it


def test_a_prepared_state_for_another_date_or_grouping_is_refused(small_data, small_predictor, prepared):
    with pytest.raises(ValueError, match="prepared for"):
        outlook(small_predictor, small_data[0], AS_OF, periods=1, config=FAST, prepared=prepared)  # no group_by


def test_the_cache_reuses_per_data_and_a_new_dataset_invalidates_it(small_data, small_predictor):
    data = small_data[0]
    cache = PreparedCache(size=2)
    first = cache.get(small_predictor, data, AS_OF, "month", None, FAST)
    assert cache.get(small_predictor, data, AS_OF, "month", None, replace(FAST, n_sims=100, seed=9)) is first
    assert (cache.hits, cache.misses) == (1, 1)
    # a new ingest: a new dataset object with other contents (one deal fewer) gets its own state
    changed = replace(data, deals=data.deals.iloc[1:].reset_index(drop=True))
    other = cache.get(small_predictor, changed, AS_OF, "month", None, FAST)
    assert other is not first and cache.misses == 2
    assert len(other.known.deals) == len(first.known.deals) - 1
    # the calibration settings are part of the key; the oldest entry is evicted past `size`
    assert cache.get(small_predictor, data, AS_OF, "month", None, replace(FAST, shock=0.1)) is not first
    assert cache.get(small_predictor, data, AS_OF, "month", None, FAST) is not first and cache.misses == 4


def test_bad_options_are_clear_errors_before_any_scoring(small_data, small_predictor):
    cache = PreparedCache()
    with pytest.raises(LeadscoreError, match="not a column"):
        cache.get(small_predictor, small_data[0], AS_OF, "month", "colour", FAST)
    with pytest.raises(LeadscoreError, match="freq"):
        cache.get(small_predictor, small_data[0], AS_OF, "week", None, FAST)
    assert cache.misses == 2 and not cache._entries

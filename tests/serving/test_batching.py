"""Concurrent requests scored as one batch give each request exactly its own scores."""
from __future__ import annotations

import asyncio

import models_cache
import numpy as np
import pandas as pd
import pytest
from payloads import payload_records

from features.arrays import DealArrays
from features.payload import payload_arrays
from serving.batching import ScoreBatcher
from serving.schemas import ScoreRequest
from training.compiled import CompiledPredictor


@pytest.fixture(scope="module")
def predictor():
    """The small predictor compiled as the service compiles it."""
    return CompiledPredictor.compile(models_cache.small_train_result().predictor)


@pytest.fixture(scope="module")
def requests_(predictor):
    """Eight requests of 1-40 deals at three different as-of dates; two without activity data."""
    data, _ = models_cache.small_data()
    out = []
    for k in range(8):
        as_of = data.data_end - pd.Timedelta(days=[10, 60, 150][k % 3])
        raw = payload_records(data, as_of)[k * 40: k * 40 + [1, 40, 7, 23][k % 4]]
        if k in (2, 5):
            raw = [{key: v for key, v in r.items() if key != "activities"} for r in raw]
        records = list(ScoreRequest.model_validate({"deals": raw}).deals)
        checked = payload_arrays(records, predictor.meta)
        assert checked.rejects == []
        at = np.full(len(records), np.datetime64(as_of), dtype="datetime64[us]")
        out.append((checked.arrays, at))
    return out


def _assert_same(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for name in want:
        if name == "top_factors":
            assert list(got[name]) == list(want[name])
        else:
            np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(want[name]), err_msg=name)


def test_merged_arrays_score_like_each_request_alone(predictor, requests_):
    merged = predictor.score_arrays(DealArrays.concat([a for a, _ in requests_]),
                                    np.concatenate([at for _, at in requests_]), explain=True)
    start = 0
    for arrays, at in requests_:
        alone = predictor.score_arrays(arrays, at, explain=True)
        _assert_same({k: v[start:start + len(arrays)] for k, v in merged.items()}, alone)
        start += len(arrays)


def test_concurrent_requests_share_a_batch_and_get_their_own_scores(predictor, requests_):
    batcher = ScoreBatcher(predictor, max_deals=1000, inline_deals=0)

    async def burst():
        return await asyncio.gather(*[batcher.score(arrays, at, True) for arrays, at in requests_])

    results = asyncio.run(burst())
    assert batcher.requests == len(requests_) and batcher.batches < len(requests_)
    for (arrays, at), got in zip(requests_, results):
        _assert_same(got, predictor.score_arrays(arrays, at, explain=True))


def test_batches_respect_the_deal_cap_and_the_explain_flag(predictor, requests_):
    batcher = ScoreBatcher(predictor, max_deals=50, inline_deals=0)

    async def burst():
        return await asyncio.gather(*[batcher.score(arrays, at, k % 2 == 0) for k, (arrays, at) in enumerate(requests_)])

    results = asyncio.run(burst())
    assert batcher.batches >= 4  # 131 deals in two explain groups, at most 50 deals a batch
    for k, ((arrays, at), got) in enumerate(zip(requests_, results)):
        _assert_same(got, predictor.score_arrays(arrays, at, explain=k % 2 == 0))


def test_a_failing_request_fails_alone(predictor, requests_):
    bad_ids = set(requests_[3][0].deal_id)

    class FailsOnOneRequest:
        def score_arrays(self, arrays, at, explain=False):
            if bad_ids & set(arrays.deal_id):
                raise RuntimeError("boom")
            return predictor.score_arrays(arrays, at, explain)

    batcher = ScoreBatcher(FailsOnOneRequest(), inline_deals=0)

    async def burst():
        return await asyncio.gather(*[batcher.score(arrays, at, False) for arrays, at in requests_],
                                    return_exceptions=True)

    results = asyncio.run(burst())
    assert isinstance(results[3], RuntimeError)
    assert all(isinstance(r, dict) for k, r in enumerate(results) if k != 3)


def test_small_requests_on_an_idle_batcher_skip_the_thread(predictor, requests_):
    batcher = ScoreBatcher(predictor, inline_deals=20)
    one, at = requests_[0]  # 1 deal
    big, big_at = requests_[1]  # 40 deals

    async def lone():
        return await batcher.score(one, at, True)

    _assert_same(asyncio.run(lone()), predictor.score_arrays(one, at, explain=True))
    assert (batcher.inline, batcher.batches) == (1, 0)

    async def big_then_small():  # the big one goes to a thread; small ones arriving meanwhile join its queue
        return await asyncio.gather(batcher.score(big, big_at, True),
                                    *[batcher.score(a, t, True) for a, t in requests_[2:5]])

    results = asyncio.run(big_then_small())
    assert batcher.inline == 1 and batcher.batches == 1 and batcher.requests == 4
    for (arrays, at_), got in zip([(big, big_at), *requests_[2:5]], results):
        _assert_same(got, predictor.score_arrays(arrays, at_, explain=True))

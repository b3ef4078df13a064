"""`/score`'s request path with the service's score log and trend index (the objects
`LeadScoreService` builds): rows reach the store, a second score of the same deals carries
a trend, and a store outage fails no request (it is counted)."""
from __future__ import annotations

import asyncio
import json

import models_cache
import pandas as pd
import pytest
from payloads import payload_records
from processes import free_port

from serving.batching import ScoreBatcher
from serving.request import score_request
from serving.schemas import ScoreRequest, ScoreResponse
from training.compiled import CompiledPredictor
from training.monitoring.trend import TrendIndex
from training.store.connection import open_store
from training.store.score_log import ScoreLog
from training.store.scores import scores


@pytest.fixture(scope="module")
def model():
    return CompiledPredictor.compile(models_cache.small_predictor())


def _request(as_of: pd.Timestamp, ids: list[str] | None = None) -> list[dict]:
    data, _ = models_cache.small_data()
    raw = payload_records(data, as_of)[:40] if ids is None else payload_records(data, as_of, ids)
    return list(ScoreRequest.model_validate({"deals": raw}).deals)


def _serve(model, score_log: ScoreLog, index: TrendIndex, deals: list[dict], as_of) -> dict:
    def record(scored):
        score_log.submit(scored, "leadscore", 1)
        return index.observe(scored)

    response = asyncio.run(score_request(model, ScoreBatcher(model), deals, as_of, "path", 1, record=record))
    assert response.status_code == 200, response.body
    return json.loads(response.body)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.e2e)])
def store_url(request, tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")


def test_scores_are_logged_and_a_rescore_has_a_trend(model, store_url):
    data, _ = models_cache.small_data()
    first_at = data.data_end - pd.Timedelta(days=60)
    first = _request(first_at)
    ids = [d["deal_id"] for d in first]
    score_log, index = ScoreLog(store_url), TrendIndex()
    one = _serve(model, score_log, index, first, first_at)
    later = first_at + pd.Timedelta(days=14)
    still_open = _request(later, ids)
    two = _serve(model, score_log, index, still_open, later)
    assert score_log.flush() and score_log.status()["written"] == len(first) + len(still_open)
    score_log.close()
    assert all(d["trend"] is None for d in one["deals"])
    trends = [d["trend"] for d in two["deals"]]
    assert still_open and all(t is not None for t in trends)
    ScoreResponse.model_validate(two)  # the fast JSON path wrote what the model would
    before = {d["deal_id"]: d["close_probability"] for d in one["deals"]}
    for deal, trend in zip(two["deals"], trends):
        change = deal["close_probability"] - before[deal["deal_id"]]
        assert trend["change"] == pytest.approx(change, abs=1e-4)
        assert trend["direction"] == ("improving" if change >= 0.05 else "declining" if change <= -0.05 else "steady")
    store = open_store(store_url)
    logged = scores(store)
    store.close()
    assert len(logged) == len(first) + len(still_open)
    row = logged.iloc[0]
    served = one["deals"][0]
    assert (row["deal_id"], row["probability"], row["score"], row["tier"]) == \
        (served["deal_id"], served["close_probability"], served["score"], served["tier"])
    assert row["top_factors"] == [f["feature"] for side in ("positive", "negative")
                                  for f in served["top_factors"][side]]


def test_a_store_outage_fails_no_request(model):
    data, _ = models_cache.small_data()
    at = data.data_end - pd.Timedelta(days=30)
    score_log = ScoreLog(f"postgresql+psycopg://leadscore@127.0.0.1:{free_port()}/leadscore")
    deals = _request(at)
    for _ in range(3):
        assert len(_serve(model, score_log, TrendIndex(), deals, at)["deals"]) == len(deals)
    assert score_log.flush()
    status = score_log.status()
    score_log.close()
    assert status["failed"] == 3 * len(deals) and status["written"] == 0 and status["outages"] == 1

"""The request-sized fast paths give the same numbers as the slow, obvious ones.

- LightGBM on our one-off matrix (`lgb_matrix`, one thread) == LightGBM on the feature
  frame with its own pandas conversion and its default threads;
- a batch of deals scored in one call == each deal scored as its own request;
- the hand-written response JSON == `ScoreResponse(...).model_dump_json()`.
"""
from __future__ import annotations

import json
import math

import lightgbm as lgb
import models_cache
import numpy as np
import pandas as pd
import pytest
from payloads import canonical_from_records, payload_records

from serving.request import shape_scores
from serving.schemas import ScoreRequest, ScoreResponse, score_response_json
from training.compiled import CompiledPredictor
from training.lightgbm_fast import _inner_predictor, lgb_matrix, predict_booster, shared_matrix
from training.request import score_request


@pytest.fixture(scope="module")
def predictor():
    return models_cache.small_train_result().predictor


@pytest.fixture(scope="module")
def scoring(predictor):
    """Open deals at two dates as the service sees them (parsed by pydantic), their
    canonical tables and feature rows."""
    data, _ = models_cache.small_data()
    out = []
    for days in (30, 120):
        as_of = data.data_end - pd.Timedelta(days=days)
        raw = payload_records(data, as_of)[:150]
        records = list(ScoreRequest.model_validate({"deals": raw}).deals)
        checked = canonical_from_records(records, predictor.meta)
        assert checked.rejects.empty
        out.append((as_of, records, checked.data, predictor.features(checked.data, as_of)))
    return out


def _frame_predictions(predictor, X: pd.DataFrame) -> dict[str, np.ndarray]:
    """The obvious path: each booster on the pandas frame (LightGBM converts it), default threads."""
    close, time = predictor.close_model, predictor.time_model
    raw = close.booster_.predict(X, raw_score=True, num_iteration=close.best_iteration_)
    p = np.clip(close.calibrator_.predict(raw), 1e-4, 1 - 1e-4)
    q = np.column_stack([b.predict(X, num_iteration=b.best_iteration or None) for b in time.boosters_])
    q = np.maximum(np.sort(q + time.shifts_, axis=1), 0.0)
    contrib = close.booster_.predict(X, pred_contrib=True, num_iteration=close.best_iteration_)
    return {"p": p, "logq": q, "contrib": contrib}


def test_models_on_the_shared_matrix_equal_lightgbm_on_the_frame(predictor, scoring):
    assert not predictor.close_model.fallback_, "the small model must be a real LightGBM model here"
    for _, _, _, feats in scoring:
        X = feats[predictor.feature_names]
        M = shared_matrix(X, predictor.close_model, predictor.time_model)
        assert isinstance(M, np.ndarray)
        want = _frame_predictions(predictor, X)
        np.testing.assert_array_equal(predictor.close_model.predict_proba(M), want["p"])
        np.testing.assert_array_equal(predictor.time_model.predict_log_quantiles(M), want["logq"])
        np.testing.assert_array_equal(predictor.close_model.contributions(M, method="shap"), want["contrib"])
        # a frame passed directly takes the same route
        np.testing.assert_array_equal(predictor.close_model.predict_proba(X), want["p"])


def test_predict_booster_answers_as_booster_predict_with_one_predictor_per_booster(predictor, scoring):
    """`predict_booster` keeps LightGBM's predictor object per booster: the same output as
    `Booster.predict` (one thread, as it runs), and a booster reloaded in place answers as its new model."""
    close, time = predictor.close_model, predictor.time_model
    names = predictor.feature_names
    M = shared_matrix(scoring[0][3][names], close, time)
    booster = close.booster_
    for kwargs in ({}, {"raw_score": True}, {"pred_leaf": True, "num_iteration": 3}, {"pred_contrib": True}):
        for rows in (M[:1], M):
            got = predict_booster(booster, rows, names, **kwargs)
            want = booster.predict(rows, num_threads=1, **kwargs)
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
    assert _inner_predictor(booster, 1) is _inner_predictor(booster, 1)
    copy = lgb.Booster(model_str=booster.model_to_string())
    np.testing.assert_array_equal(predict_booster(copy, M, names), booster.predict(M))
    copy.model_from_string(time.boosters_[0].model_to_string())  # another model in the same Booster object
    np.testing.assert_array_equal(predict_booster(copy, M, names), time.boosters_[0].predict(M))


def test_matrix_maps_reordered_and_unseen_categories_like_lightgbm(predictor, scoring):
    X = scoring[0][3][predictor.feature_names].copy()
    owner = X["owner"].cat.categories
    X["owner"] = X["owner"].cat.set_categories(list(owner[::-1]) + ["nobody-seen"])  # other codes, same values
    X.loc[X.index[:3], "owner"] = "nobody-seen"
    booster = predictor.close_model.booster_
    np.testing.assert_array_equal(booster.predict(lgb_matrix(X, booster.pandas_categorical), raw_score=True),
                                  booster.predict(X, raw_score=True))


def test_matrix_refuses_a_frame_with_other_categorical_columns(predictor, scoring):
    X = scoring[0][3][predictor.feature_names]
    with pytest.raises(ValueError, match="categorical columns"):
        lgb_matrix(X, predictor.close_model.booster_.pandas_categorical[:-1])


def test_the_request_path_scores_like_the_canonical_path(predictor, scoring):
    model = CompiledPredictor.compile(predictor)
    for as_of, records, data, _ in scoring:
        want = predictor.score(data, as_of, explain=True)
        got = score_request(model, records, as_of, explain=True).scores
        assert list(got["deal_id"]) == list(want["deal_id"])
        for name in want.columns:
            if name == "top_factors":
                assert list(got[name]) == list(want[name])
            else:
                np.testing.assert_array_equal(np.asarray(got[name]), want[name].to_numpy(), err_msg=name)


def test_a_batch_scores_like_single_requests(predictor, scoring):
    as_of, records, data, _ = scoring[1]
    batch = predictor.score(data, as_of, explain=True).set_index("deal_id")
    assert len(batch) == len(records)
    for rec in records[:40]:
        single = predictor.score(canonical_from_records([rec], predictor.meta).data, as_of, explain=True)
        pd.testing.assert_frame_equal(single.set_index("deal_id"), batch.loc[[rec["deal_id"]]], check_exact=True)


def test_expected_close_dates_are_as_of_plus_rounded_days_at_midnight(predictor, scoring):
    as_of, _, data, _ = scoring[0]
    scored = predictor.score(data, as_of)
    for name in ("p10", "p50", "p90"):
        want = (pd.to_datetime(scored["as_of"]) + pd.to_timedelta(np.round(scored[f"close_days_{name}"]), unit="D")
                ).dt.normalize()
        pd.testing.assert_series_equal(scored[f"expected_close_date_{name}"], want, check_names=False)


def _both_json(predictor, as_of, records, data, version=7):
    """The service's path (payload arrays, no frames) rendered both ways; `data` is unused
    by it and kept for the callers' symmetry with the canonical-table path."""
    scored = score_request(CompiledPredictor.compile(predictor), records, as_of, explain=True)
    assert scored.checked.errors == []
    rows = shape_scores(scored.scores, [r["deal_id"] for r in records], scored.warnings, version)
    fast = json.loads(score_response_json(version, as_of, rows))
    slow = json.loads(ScoreResponse(model_version=version, as_of=as_of, deals=rows).model_dump_json())
    return fast, slow, rows


def test_response_json_equals_pydantic(predictor, scoring):
    for as_of, records, data, _ in scoring:
        fast, slow, _ = _both_json(predictor, as_of, records, data)
        assert fast == slow
        assert list(fast["deals"][0]) == list(slow["deals"][0])  # same field order too


def test_response_json_with_warnings_missing_values_and_no_factors(predictor, scoring):
    as_of, records, _, _ = scoring[0]
    records = [dict(r) for r in records[:5]]
    records[0]["owner"] = "never-seen-owner"
    records[1].pop("amount", None)
    records[2].pop("activities", None)
    data = canonical_from_records(records, predictor.meta).data
    fast, slow, rows = _both_json(predictor, as_of, records, data)
    assert fast == slow and fast["deals"][0]["warnings"]
    rows = [dict(r, top_factors=None, close_days_p10=None, expected_close_date_p50=None) for r in rows]
    assert json.loads(score_response_json(1, None, rows)) == \
        json.loads(ScoreResponse(model_version=1, as_of=None, deals=rows).model_dump_json())


def test_response_json_falls_back_to_pydantic_for_what_it_does_not_write(predictor, scoring):
    as_of, records, data, _ = scoring[0]
    _, _, rows = _both_json(predictor, as_of, records[:3], canonical_from_records(records[:3], predictor.meta).data)
    odd = [dict(rows[0], close_days_p50=math.nan), dict(rows[1], close_days_p90=math.inf),
           dict(rows[2], expected_close_date_p10=pd.Timestamp("2024-05-01"))]
    fast = json.loads(score_response_json(2, as_of, odd))
    assert fast == json.loads(ScoreResponse(model_version=2, as_of=as_of, deals=odd).model_dump_json())
    assert fast["deals"][0]["close_days_p50"] is None  # pydantic writes NaN as null

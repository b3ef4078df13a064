"""Every date-time the service answers with is UTC and says so ("Z"); dates stay dates."""
from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd

from serving.request import shape_scores
from serving.schemas import ScoreResponse, score_response_json
from serving.times import mark_utc

ROW = {"deal_id": "D1", "close_probability": 0.4, "score": 40, "tier": "warm", "model_version": 3,
       "expected_close_date_p50": dt.date(2024, 11, 2), "top_factors": None, "warnings": []}


def test_mark_utc_ends_naive_times_in_z_and_leaves_the_rest():
    answer = {"as_of": "2024-10-01T00:00:00", "data": {"loaded_at": "2026-11-25T04:01:02.123456"},
              "periods": [{"start": "2024-10-01T00:00", "label": "2024-10", "day": "2024-10-01"}],
              "aware": "2024-10-01T00:00:00+02:00", "z": "2024-10-01T00:00:00Z", "n": 3, "none": None,
              "text": "as of 2024-10-01T00:00:00 the pipeline"}
    assert mark_utc(answer) == {
        "as_of": "2024-10-01T00:00:00Z", "data": {"loaded_at": "2026-11-25T04:01:02.123456Z"},
        "periods": [{"start": "2024-10-01T00:00Z", "label": "2024-10", "day": "2024-10-01"}],
        "aware": "2024-10-01T00:00:00+02:00", "z": "2024-10-01T00:00:00Z", "n": 3, "none": None,
        "text": "as of 2024-10-01T00:00:00 the pipeline"}


def test_score_answer_times_carry_z_on_the_fast_path_and_the_model_path():
    """The scored column (datetime64), the trend's `since` (naive) and the request's as-of
    (naive, or with an offset) come out in UTC with "Z"; the expected close dates stay dates."""
    scored = {"deal_id": np.array(["D1"], dtype=object), "as_of": np.array(["2024-10-01T00:00"], dtype="datetime64[ns]"),
              "close_probability": np.array([0.4]), "score": np.array([40]), "tier": np.array(["warm"], dtype=object),
              "expected_close_date_p50": np.array(["2024-11-02"], dtype="datetime64[ns]")}
    trend = {"direction": "improving", "change": 0.1, "since": dt.datetime(2024, 9, 20, 6, 30), "factor": None}
    rows = shape_scores(scored, ["D1"], {}, 3, [trend])
    for as_of in (pd.Timestamp("2024-10-01"), pd.Timestamp("2024-10-01T02:00:00+02:00")):
        fast = json.loads(score_response_json(3, as_of, rows))
        assert fast["as_of"] == fast["deals"][0]["as_of"] == "2024-10-01T00:00:00Z"
        assert fast["deals"][0]["trend"]["since"] == "2024-09-20T06:30:00Z"
        assert fast["deals"][0]["expected_close_date_p50"] == "2024-11-02"
    # a row the fast writer is not sure of goes through the model: the same times
    slow = json.loads(score_response_json(3, pd.Timestamp("2024-10-01"), [dict(rows[0], score=np.int64(40))]))
    assert slow["as_of"] == slow["deals"][0]["as_of"] == "2024-10-01T00:00:00Z"
    assert slow["deals"][0]["trend"]["since"] == "2024-09-20T06:30:00Z"
    naive = ScoreResponse(model_version=3, as_of=dt.datetime(2024, 10, 1), deals=[dict(ROW, as_of=dt.datetime(2024, 10, 1))])
    assert json.loads(naive.model_dump_json())["deals"][0]["as_of"] == "2024-10-01T00:00:00Z"


def test_times_in_error_messages_are_utc_with_z():
    from training.request import future_errors

    facts = {"created_at": (np.array([0]), np.array(["2024-11-01T06:00"], dtype="datetime64[us]"))}
    [error] = future_errors(facts, pd.Timestamp("2024-10-01"))  # the request path's as_of: naive UTC
    assert error.as_dict() == {"field": "deals[0].created_at", "message": "2024-11-01T06:00:00Z is after as_of "
                               "2024-10-01T00:00:00Z: send as_of at or after the deal's latest fact"}

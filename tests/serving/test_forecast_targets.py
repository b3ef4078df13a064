"""Targets in a `/forecast` request: the rules of a targets file, each error a 422 at the
row and field that caused it, checked before anything is simulated."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from pydantic import ValidationError

from features.synthetic import generate_data
from serving.errors import pydantic_errors
from serving.forecast_targets import targets_error, targets_frame
from serving.schemas import ForecastRequest
from training.forecast.periods import make_periods
from training.forecast.targets import FILE, TargetsError, checked_targets


@pytest.fixture(scope="module")
def data():
    return generate_data(400, seed=3, months=8)[0]


@pytest.fixture(scope="module")
def at(data):
    return pd.Timestamp("2023-08-10")


def error_of(rows, data, at, group_by=None, periods=2, freq="month"):
    answer = targets_error(rows, data, at, periods, freq, group_by)
    assert answer is not None
    assert answer.status_code == 422
    body = json.loads(answer.body)
    [error] = body["errors"]
    assert "--" not in error["message"] and "file" not in error["message"]  # HTTP words, not the CLI's
    return error


def test_good_company_and_group_targets_pass(data, at):
    assert targets_error([{"period": "2023-08", "target": 5e5}, {"period": "2023-09", "target": 0}],
                         data, at, 2, "month", None) is None
    regions = sorted(data.deals["region"].dropna().astype(str).unique())
    rows = [{"period": "2023-08", "region": r, "target": 1000.0} for r in regions]
    assert targets_error(rows, data, at, 2, "month", "region") is None
    assert targets_error([{"period": "2023Q3", "target": 1.0}], data, at, 1, "quarter", None) is None


@pytest.mark.parametrize("rows,group_by,field,words", [
    ([{"period": "2023-08", "region": "EU", "target": 1}], None, "targets[0].region", "pass group_by region"),
    ([{"period": "2023-08", "target": 1}, {"period": "2023-08", "team": "t1", "target": 1}], "region",
     "targets[1].team", "does not match group_by region"),
    ([{"period": "2023-08", "target": 1}, {"period": "2024-05", "target": 1}], None, "targets[1].period",
     "outside the forecast (2023-08, 2023-09): extend periods"),
    ([{"period": "August", "target": 1}], None, "targets[0].period", "bad period 'August'"),
    ([{"period": "2023-08", "target": -3}], None, "targets[0].target", "negative target"),
    ([{"period": "2023-08", "region": "Atlantis", "target": 1}], "region", "targets[0].region", "no deal has"),
    ([{"period": "2023-08", "target": 1}, {"period": "2023-08", "target": 2}], None, "targets[1]",
     "more than one target"),
    ([{"period": "2023-08", "region": "EU", "target": 1}, {"period": "2023-09", "target": 2}], "region",
     "targets[1].region", "in some rows only"),
])
def test_bad_targets_are_422_at_their_row_and_field(data, at, rows, group_by, field, words):
    error = error_of(rows, data, at, group_by)
    assert error["field"] == field and words in error["message"], error


def test_the_file_keeps_its_cli_words_and_locates_the_row(data, at):
    frame = pd.DataFrame({"period": ["2023-08", "2023-09"], "region": ["EU", "EU"], "target": ["1", "2"]})
    with pytest.raises(TargetsError, match="the targets file has a group column 'region': pass --group-by region"):
        checked_targets(frame, make_periods(at, 2, "month"), "month", None, source=FILE)
    bad = pd.DataFrame({"period": ["2023-08", "2023-09"], "target": ["1", "lots"]})
    with pytest.raises(TargetsError) as info:
        checked_targets(bad, make_periods(at, 2, "month"), "month", None)
    assert (info.value.row, info.value.column) == (1, "target") and "bad target value 'lots'" in str(info.value)


def test_the_request_schema_reads_target_rows():
    request = ForecastRequest.model_validate({"group_by": "region", "targets": [
        {"period": "2025-01", "region": "EMEA", "target": 400000}]})
    assert targets_frame([t.model_dump() for t in request.targets]).to_dict("records") == [
        {"period": "2025-01", "target": 400000.0, "region": "EMEA"}]
    with pytest.raises(ValidationError) as info:
        ForecastRequest.model_validate({"targets": [{"period": "2025-01", "target": -1}]})
    assert pydantic_errors(info.value.errors())[0]["field"] == "targets[0].target"
    with pytest.raises(ValidationError):
        ForecastRequest.model_validate({"targets": {"2025-01": 1e6}})  # the one form: rows


def test_request_targets_gives_the_frame_an_error_or_none(data, at):
    from serving.forecast_targets import request_targets

    request = ForecastRequest.model_validate({"targets": [{"period": "2023-08", "target": 10}]})
    frame = request_targets(request.targets, data, at, 2, "month", None)
    assert frame.to_dict("records") == [{"period": "2023-08", "target": 10.0}]
    assert request_targets(None, data, at, 2, "month", None) is None
    assert request_targets([], data, at, 2, "month", None) is None
    assert request_targets([{"period": "2030-01", "target": 1}], data, at, 2, "month", None).status_code == 422

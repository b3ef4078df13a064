"""An exact contract: an unknown top-level field is a 422 at its path naming the close
match; an unknown deal key is scored without and said so in that deal's warnings."""
from __future__ import annotations

import asyncio
import json

import models_cache
import pandas as pd
import pytest
from _bentoml_sdk.io_models import ensure_io_descriptor
from payloads import payload_records
from pydantic import ValidationError

from serving.errors import pydantic_errors
from serving.loader import ConfigError, ServingConfig
from serving.schemas import DEAL_FIELDS, ForecastRequest, PipelineRequest, ScoreRequest
from serving.unknown_fields import unknown_deal_keys, unknown_key_errors, unknown_key_warnings

DEAL = {"deal_id": "D1", "created_at": "2024-01-01T00:00:00", "stage": "lead"}


def errors_of(model, body: dict) -> list[dict]:
    with pytest.raises(ValidationError) as info:
        model.model_validate_json(json.dumps(body))
    return pydantic_errors(info.value.errors(), model.model_fields)


@pytest.mark.parametrize("model,body", [
    (ScoreRequest, {"deals": [DEAL], "asof": "2024-12-01"}),
    (ensure_io_descriptor(ScoreRequest), {"deals": [DEAL], "asof": "2024-12-01"}),  # what BentoML validates with
    (ForecastRequest, {"asof": "2024-12-01"}),
    (PipelineRequest, {"asof": "2024-12-01"}),
])
def test_an_unknown_top_level_field_names_the_close_match(model, body):
    assert errors_of(model, body) == [{"field": "asof", "message": "unknown field 'asof'; did you mean 'as_of'?"}]


def test_an_unknown_field_without_a_close_match_lists_the_known_ones():
    [error] = errors_of(PipelineRequest, {"colour": "red"})
    assert error == {"field": "colour", "message": "unknown field 'colour'; known fields: as_of, group_by, target"}


def test_unknown_deal_keys_are_warnings_per_deal():
    deals = [dict(DEAL, industy="retail"), dict(DEAL, deal_id="D2", industry="retail", owner="r1"),
             dict(DEAL, deal_id="D3", zzz=1)]
    known = DEAL_FIELDS | {"industry"}
    unknown = unknown_deal_keys(deals, known)
    assert unknown == {0: ["industy"], 2: ["zzz"]}
    assert unknown_key_warnings(unknown, known) == {
        0: ["unknown field 'industy'; did you mean 'industry'? (ignored)"],
        2: ["unknown field 'zzz'; known fields: account_id, activities, amount, created_at, deal_id, "
            "expected_close_date, industry, owner, product, region, segment, source, stage, stage_entered_at, "
            "stage_history, team (ignored)"]}
    assert unknown_deal_keys(deals[1:2], known) == {}
    assert unknown_key_errors(unknown, known)[0] == {
        "field": "deals[0].industy", "message": "unknown field 'industy'; did you mean 'industry'?"}


@pytest.mark.parametrize("raw,strict", [("", False), ("0", False), ("1", True), (" true ", True), ("off", False)])
def test_the_strict_setting(raw, strict):
    assert ServingConfig.from_env({"LEADSCORE_STRICT_KEYS": raw}).strict_keys is strict


def test_a_bad_strict_setting_is_one_line():
    with pytest.raises(ConfigError, match="LEADSCORE_STRICT_KEYS='maybe' is not a switch"):
        ServingConfig.from_env({"LEADSCORE_STRICT_KEYS": "maybe"})


def test_the_score_response_carries_the_unknown_key_warning():
    from serving.batching import ScoreBatcher
    from serving.request import score_request
    from training.compiled import CompiledPredictor

    predictor = models_cache.small_train_result().predictor
    data, _ = models_cache.small_data()
    as_of = data.data_end - pd.Timedelta(days=30)
    deals = list(ScoreRequest.model_validate({"deals": payload_records(data, as_of)[:3]}).deals)
    deals[1]["ownr"] = "rep_1"
    model = CompiledPredictor.compile(predictor)

    async def run(strict: bool):
        return await score_request(model, ScoreBatcher(model), deals, as_of, "path", 1, strict_keys=strict)

    answer = asyncio.run(run(False))
    body = json.loads(answer.body)
    assert answer.status_code == 200
    assert body["deals"][1]["warnings"] == ["unknown field 'ownr'; did you mean 'owner'? (ignored)"]
    assert all("ownr" not in w for i in (0, 2) for w in body["deals"][i]["warnings"])
    # strict: a 422 naming the key at its path, with the close match; nothing scored
    refused = asyncio.run(run(True))
    assert refused.status_code == 422
    assert json.loads(refused.body)["errors"] == [{"field": "deals[1].ownr",
                                                   "message": "unknown field 'ownr'; did you mean 'owner'?"}]


def test_the_http_error_names_the_close_match_of_the_route_model():
    """BentoML answers an unknown field with its 400 and pydantic's `extra_forbidden`; the
    reshaped 422 names the close match among the fields of the route's request model."""
    from serving.errors import reshape_400

    with pytest.raises(ValidationError) as info:
        ensure_io_descriptor(ScoreRequest).model_validate_json(json.dumps({"deals": [DEAL], "asof": "2024-12-01"}))
    bentoml_400 = json.dumps({"error": str(info.value), "detail": info.value.errors(include_url=False)}).encode()
    status, body = reshape_400(bentoml_400, list(ScoreRequest.model_fields))
    assert status == 422
    assert body["errors"] == [{"field": "asof", "message": "unknown field 'asof'; did you mean 'as_of'?"}]
    assert reshape_400(bentoml_400)[1]["errors"] == [{"field": "asof", "message": "unknown field 'asof'"}]

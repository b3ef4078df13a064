"""Request models: what is refused before the model is asked, and how it is reported."""
from __future__ import annotations

import math
from datetime import datetime

import pytest
from pydantic import ValidationError

from serving.auth import AuthConfigError, bearer_token, key_is_valid, load_api_keys
from serving.errors import field_path, pydantic_errors, reshape_400
from serving.loader import ConfigError, ServingConfig
from serving.schemas import ScoreRequest

DEAL = {"deal_id": "D1", "created_at": "2024-01-01T00:00:00", "stage": "lead", "amount": 100.0}


def errors_of(payload) -> list[dict]:
    with pytest.raises(ValidationError) as info:
        ScoreRequest.model_validate(payload)
    return pydantic_errors(info.value.errors())


def test_valid_request_keeps_attributes_and_defaults():
    req = ScoreRequest.model_validate({"deals": [dict(DEAL, industry="retail", company_size=12)]})
    assert req.deals[0] == dict(DEAL, created_at=datetime(2024, 1, 1), industry="retail", company_size=12)
    assert req.explain is True and req.as_of is None


@pytest.mark.parametrize("change,field", [
    ({"amount": -1}, "deals[0].amount"),
    ({"amount": "lots"}, "deals[0].amount"),
    ({"amount": math.inf}, "deals[0].amount"),
    ({"amount": math.nan}, "deals[0].amount"),
    ({"created_at": "yesterday-ish"}, "deals[0].created_at"),
    ({"deal_id": ""}, "deals[0].deal_id"),
    ({"stage": None}, "deals[0].stage"),
    ({"stage_history": [{"stage": "lead"}]}, "deals[0].stage_history[0].entered_at"),
    ({"activities": [{"type": "call"}]}, "deals[0].activities[0].occurred_at"),
    ({"industry": {"nested": 1}}, "deals[0]"),
    ({"company_size": math.inf}, "deals[0]"),
])
def test_bad_fields_are_reported_by_path(change, field):
    assert field in [e["field"] for e in errors_of({"deals": [dict(DEAL, **change)]})]


def test_missing_required_field():
    deal = dict(DEAL)
    deal.pop("created_at")
    assert errors_of({"deals": [deal]})[0]["field"] == "deals[0].created_at"


def test_empty_batch_and_duplicates():
    assert errors_of({"deals": []})[0]["field"] == "deals"
    errs = errors_of({"deals": [DEAL, dict(DEAL, amount=5.0)]})
    assert errs[0]["field"] == "deals" and "deals[1].deal_id" in errs[0]["message"]


def test_history_must_be_in_time_order_and_end_in_current_stage():
    history = [{"stage": "lead", "entered_at": "2024-02-01"}, {"stage": "qualified", "entered_at": "2024-01-15"}]
    assert "stage_history[1]" in errors_of({"deals": [dict(DEAL, stage="qualified", stage_history=history)]})[0]["message"]
    history = [{"stage": "lead", "entered_at": "2024-01-01"}]
    assert "differs" in errors_of({"deals": [dict(DEAL, stage="qualified", stage_history=history)]})[0]["message"]


def test_stage_entered_before_created():
    assert "before created_at" in errors_of({"deals": [dict(DEAL, stage_entered_at="2023-01-01")]})[0]["message"]


def test_inputs_stay_out_of_error_texts():
    with pytest.raises(ValidationError) as info:
        ScoreRequest.model_validate({"deals": [dict(DEAL, amount="jane.doe@example.com")]})
    assert "jane.doe" not in str(info.value)


def test_timezones_are_accepted():
    deal = ScoreRequest.model_validate({"deals": [dict(DEAL, created_at="2024-01-01T02:00:00+02:00")]}).deals[0]
    assert deal["created_at"].utcoffset().total_seconds() == 7200


def test_field_path():
    assert field_path(("deals", 3, "stage_history", 0, "amount")) == "deals[3].stage_history[0].amount"
    assert field_path(()) == "body"


def test_reshape_400():
    status, body = reshape_400(b'{"error": "x", "detail": [{"type": "json_invalid", "loc": [], "msg": "bad"}]}')
    assert status == 400 and "not valid JSON" in body["error"]
    status, body = reshape_400(b'{"error": "x", "detail": [{"type": "missing", "loc": ["deals", 0, "stage"], '
                               b'"msg": "Field required"}]}')
    assert status == 422 and body["errors"] == [{"field": "deals[0].stage", "message": "Field required"}]
    assert reshape_400(b"plain text")[0] == 400


def test_api_keys_from_env_and_file(tmp_path):
    key = "k" * 20
    assert load_api_keys({"LEADSCORE_API_KEYS": f" {key} , {key}2 ,"}) == [key.encode(), (key + "2").encode()]
    path = tmp_path / "keys"
    path.write_text(f"# comment\n{key}3\n\n")
    assert load_api_keys({"LEADSCORE_API_KEYS_FILE": str(path)}) == [(key + "3").encode()]
    with pytest.raises(AuthConfigError, match="LEADSCORE_API_KEYS"):
        load_api_keys({})
    with pytest.raises(AuthConfigError, match="shorter"):
        load_api_keys({"LEADSCORE_API_KEYS": "short"})
    with pytest.raises(AuthConfigError, match="LEADSCORE_API_KEYS_FILE"):
        load_api_keys({"LEADSCORE_API_KEYS_FILE": str(tmp_path / "missing")})


def test_key_checks():
    keys = [b"a" * 16, b"b" * 16]
    assert key_is_valid(b"b" * 16, keys) and not key_is_valid(b"c" * 16, keys) and not key_is_valid(b"", keys)
    assert bearer_token([(b"authorization", b"Bearer abc")]) == b"abc"
    assert bearer_token([(b"authorization", b"Basic abc")]) is None
    assert bearer_token([]) is None


def test_serving_config_from_env():
    cfg = ServingConfig.from_env({"LEADSCORE_MAX_BATCH": "10", "LEADSCORE_TIER_HOT": "0.7",
                                  "LEADSCORE_TIER_WARM": "0.3", "LEADSCORE_DATA": "/d"})
    assert (cfg.max_batch, cfg.tier_hot, cfg.tier_warm, cfg.data_dir) == (10, 0.7, 0.3, "/d")
    assert ServingConfig.from_env({}).max_batch == 1000
    assert ServingConfig.from_env({"LEADSCORE_LOG_LEVEL": " warning "}).log_level == "WARNING"
    for env in ({"LEADSCORE_MAX_BATCH": "many"}, {"LEADSCORE_MAX_BATCH": "0"}, {"LEADSCORE_TIER_HOT": "2"},
                {"LEADSCORE_TIER_HOT": "0.2", "LEADSCORE_TIER_WARM": "0.5"}, {"LEADSCORE_BATCH_DEALS": "0"},
                {"LEADSCORE_LOG_LEVEL": "chatty"}):
        with pytest.raises(ConfigError):
            ServingConfig.from_env(env)

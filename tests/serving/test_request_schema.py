"""`/score` request parsing: deals arrive as plain dicts (TypedDicts validated by pydantic),
shaped as the scoring code reads them, with every check and field path of the API.

In-process, from JSON bodies as BentoML receives them; no server."""
from __future__ import annotations

import datetime as dt
import json
import math

import pytest
from _bentoml_sdk.io_models import ensure_io_descriptor
from pydantic import ValidationError

from serving import schemas
from serving.errors import pydantic_errors
from serving.schemas import ScoreRequest

DEAL = {"deal_id": "D1", "created_at": "2024-01-01T00:00:00", "stage": "qualified", "amount": 100.0}
HISTORY = [{"stage": "lead", "entered_at": "2024-01-01T00:00:00", "amount": 90},
           {"stage": "qualified", "entered_at": "2024-01-05T00:00:00"}]


def parse(*deals: dict, **fields) -> ScoreRequest:
    return ScoreRequest.model_validate_json(json.dumps({"deals": list(deals), **fields}))


def errors_of(*deals: dict, **fields) -> list[dict]:
    with pytest.raises(ValidationError) as info:
        parse(*deals, **fields)
    return pydantic_errors(info.value.errors())


def test_deals_are_plain_dicts_without_none_at_any_level():
    deal = dict(DEAL, owner=" rep_7 ", team=None, industry="retail", company_size=12, flag=True, notes=None,
                stage_history=[dict(HISTORY[0], expected_close_date=None), dict(HISTORY[1], amount=None)],
                activities=[{"occurred_at": "2024-01-02T10:00:00", "type": None},
                            {"occurred_at": "2024-01-03T10:00:00", "type": " call "}])
    req = parse(deal, as_of="2024-02-01T00:00:00")
    assert req.deals == [{
        "deal_id": "D1", "created_at": dt.datetime(2024, 1, 1), "stage": "qualified", "amount": 100.0,
        "owner": "rep_7", "industry": "retail", "company_size": 12, "flag": True,
        "stage_history": [{"stage": "lead", "entered_at": dt.datetime(2024, 1, 1), "amount": 90.0},
                          {"stage": "qualified", "entered_at": dt.datetime(2024, 1, 5)}],
        "activities": [{"occurred_at": dt.datetime(2024, 1, 2, 10)},
                       {"occurred_at": dt.datetime(2024, 1, 3, 10), "type": "call"}]}]
    assert type(req.deals[0]) is dict and type(req.deals[0]["stage_history"][0]) is dict
    assert req.as_of == dt.datetime(2024, 2, 1) and req.explain is True


def test_a_deal_of_required_fields_only_and_null_lists():
    req = parse({"deal_id": "D9", "created_at": "2024-01-01", "stage": "lead", "stage_history": None,
                 "activities": None})
    assert req.deals == [{"deal_id": "D9", "created_at": dt.datetime(2024, 1, 1), "stage": "lead"}]


def test_aware_datetimes_stay_aware_and_naive_stay_naive():
    deal = dict(DEAL, created_at="2024-01-01T02:00:00+02:00",
                stage_history=[dict(HISTORY[0], entered_at="2024-01-01T00:00:00Z"), HISTORY[1]],
                activities=[{"occurred_at": "2024-01-02T10:00:00-05:00"}])
    out = parse(deal).deals[0]
    assert out["created_at"].utcoffset() == dt.timedelta(hours=2)
    assert out["stage_history"][0]["entered_at"].utcoffset() == dt.timedelta(0)
    assert out["stage_history"][1]["entered_at"].tzinfo is None
    assert out["activities"][0]["occurred_at"].utcoffset() == dt.timedelta(hours=-5)


@pytest.mark.parametrize("change,field,message", [
    ({"amount": math.inf}, "deals[0].amount", "finite number"),
    ({"amount": math.nan}, "deals[0].amount", "finite number"),
    ({"amount": -1}, "deals[0].amount", "greater than or equal to 0"),
    ({"amount": "lots"}, "deals[0].amount", "valid number"),
    ({"deal_id": "   "}, "deals[0].deal_id", "at least 1 character"),
    ({"deal_id": "x" * 201}, "deals[0].deal_id", "at most 200 characters"),
    ({"stage": ""}, "deals[0].stage", "at least 1 character"),
    ({"stage": None}, "deals[0].stage", "valid string"),
    ({"created_at": "yesterday-ish"}, "deals[0].created_at", "valid datetime"),
    ({"stage_entered_at": "soon"}, "deals[0].stage_entered_at", "valid datetime"),
    ({"industry": {"nested": 1}}, "deals[0]", "attribute 'industry' must be a string, a number or null"),
    ({"industry": [1, 2]}, "deals[0]", "attribute 'industry' must be a string, a number or null"),
    ({"company_size": math.nan}, "deals[0]", "attribute 'company_size' must be a string, a number or null"),
    ({"company_size": math.inf}, "deals[0]", "attribute 'company_size' must be a finite number"),
    ({"stage_entered_at": "2023-12-31T00:00:00"}, "deals[0]", "stage_entered_at is before created_at"),
    ({"stage_history": [dict(HISTORY[0], amount=-5), HISTORY[1]]}, "deals[0].stage_history[0].amount",
     "greater than or equal to 0"),
    ({"stage_history": [dict(HISTORY[0], amount=math.inf), HISTORY[1]]}, "deals[0].stage_history[0].amount",
     "finite number"),
    ({"stage_history": [HISTORY[0], dict(HISTORY[1], stage=" ")]}, "deals[0].stage_history[1].stage",
     "at least 1 character"),
    ({"stage_history": [HISTORY[0], dict(HISTORY[1], entered_at="2024-13-01")]},
     "deals[0].stage_history[1].entered_at", "valid datetime"),
    ({"stage_history": [{"stage": "lead"}]}, "deals[0].stage_history[0].entered_at", "Field required"),
    ({"activities": [{"type": "call"}]}, "deals[0].activities[0].occurred_at", "Field required"),
    ({"activities": [{"occurred_at": "2024-01-02", "type": 5}]}, "deals[0].activities[0].type", "valid string"),
    ({"stage_history": [dict(HISTORY[0], entered_at="2024-02-01T00:00:00"), HISTORY[1]]}, "deals[0]",
     "stage_history[1].entered_at is before stage_history[0].entered_at: send the history in time order"),
    ({"stage_history": HISTORY[:1]}, "deals[0]", "stage 'qualified' differs from the last stage_history entry 'lead'"),
])
def test_each_check_reports_its_field_path_and_message(change, field, message):
    errors = errors_of(dict(DEAL, deal_id="D0"), dict(DEAL, **change))  # the bad deal is the second one
    field = field.replace("deals[0]", "deals[1]")
    assert [e["field"] for e in errors] == [field], errors
    assert message in errors[0]["message"], errors


def test_missing_fields_empty_batch_and_duplicate_ids():
    deal = dict(DEAL)
    deal.pop("created_at")
    assert errors_of(deal) == [{"field": "deals[0].created_at", "message": "Field required"}]
    assert errors_of()[0]["field"] == "deals"
    errors = errors_of(DEAL, dict(DEAL, deal_id="D2"), dict(DEAL, deal_id=" D1"))
    assert errors == [{"field": "deals", "message": "deals[2].deal_id 'D1' repeats deals[0]"}]


def test_errors_of_several_deals_are_all_reported():
    errors = errors_of(dict(DEAL, amount=-1), DEAL, dict(DEAL, deal_id="D3", stage_history=HISTORY[::-1]))
    assert [e["field"] for e in errors] == ["deals[0].amount", "deals[2]"]


def test_offsets_are_compared_as_utc():
    # 01:00+02:00 is 23:00 UTC the day before: before a naive (UTC) created_at of midnight
    errors = errors_of(dict(DEAL, created_at="2024-01-02T00:00:00", stage_entered_at="2024-01-02T01:00:00+02:00"))
    assert errors[0]["message"] == "stage_entered_at is before created_at"
    # 01:00-02:00 is 03:00 UTC: after a naive 02:00, although its clock reads earlier
    mixed = [dict(HISTORY[0], entered_at="2024-01-05T01:00:00-02:00"),
             dict(HISTORY[1], entered_at="2024-01-05T02:00:00")]
    errors = errors_of(dict(DEAL, stage_history=mixed))
    assert errors[0]["message"].startswith("stage_history[1].entered_at is before stage_history[0].entered_at")
    in_order = [dict(HISTORY[0], entered_at="2024-01-04T23:00:00"),
                dict(HISTORY[1], entered_at="2024-01-05T01:00:00+02:00")]
    assert parse(dict(DEAL, stage_history=in_order)).deals[0]["stage_history"][1]["entered_at"].tzinfo is not None


def test_inputs_stay_out_of_error_texts():
    secret = "jane.doe@example.com"
    bad = dict(DEAL, amount=secret, stage_history=[dict(HISTORY[0], amount=secret), HISTORY[1]],
               activities=[{"occurred_at": secret}])
    with pytest.raises(ValidationError) as info:
        parse(bad)
    assert len(info.value.errors()) == 3 and secret not in str(info.value)


def test_bentoml_input_spec_gives_the_same_dicts_and_documents_every_field():
    spec = ensure_io_descriptor(ScoreRequest)  # what `@bentoml.api(input_spec=ScoreRequest)` validates with
    body = json.dumps({"deals": [dict(DEAL, industry=None, stage_history=HISTORY)]})
    assert spec.model_validate_json(body).deals == ScoreRequest.model_validate_json(body).deals
    components = spec.openapi_components("score")
    for name, typed_dict in (("Deal", schemas.Deal), ("StageEntry", schemas.StageEntry),
                             ("Activity", schemas.Activity)):
        props = components[name].properties
        assert set(props) == typed_dict.__required_keys__ | typed_dict.__optional_keys__
        assert all(prop.get("description") for prop in props.values()), name
    assert components["Deal"].additionalProperties is True  # declared attributes

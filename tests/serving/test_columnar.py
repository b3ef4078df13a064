"""The columnar `/score` path (serving/columnar.py) reads a clean body exactly as the request
model's path does, and gives way to it for anything else.

- clean bodies: `decode_score` -> `checked_payload` gives the arrays, rejects and dated
  facts that `ScoreRequest` -> `payload_arrays` gives (and the same `/score` answer, byte
  for byte, in the slow test);
- every kind of body the model would refuse, strip, convert or read otherwise is declined
  (None), so the model's answer (its 4xx and field paths) is the one sent;
- BentoML's JSON parsing, wrapped, hands `/score` the columns of a clean body and the
  model of any other.
"""
from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json

import models_cache
import numpy as np
import pandas as pd
import pytest
from payloads import payload_records

from features.payload import PayloadColumns, checked_payload, payload_arrays
from features.payload_values import iso_times, times
from serving.columnar import decode_score, install_columnar_score
from serving.schemas import ScoreRequest


@pytest.fixture(scope="module")
def data():
    return models_cache.small_data()[0]


@pytest.fixture(scope="module")
def records(data):
    return payload_records(data, data.data_end - pd.Timedelta(days=60))[:40]


def body(deals: list[dict], **fields) -> bytes:
    return json.dumps({"deals": deals, **fields}).encode()


def clean_variants(records: list[dict]) -> list[dict]:
    """Clean deals through every branch: no history (with and without stage_entered_at),
    no activities key, null or empty activities, "Z" and "+00:00" times, unseen categories,
    nulls, expected close dates, integer amounts."""
    out = copy.deepcopy(records)
    for i, rec in enumerate(out):
        kind = i % 8
        if kind == 1:
            rec.pop("stage_history")
            rec["stage_entered_at"] = rec["created_at"]
        elif kind == 2:
            rec.pop("stage_history")
            rec.pop("activities", None)
        elif kind == 3:
            rec["activities"] = None
            rec["owner"] = "owner-never-seen"
        elif kind == 4:
            rec["activities"] = []
            rec["created_at"] += "Z"
            for h in rec["stage_history"]:
                h["entered_at"] += "+00:00"
        elif kind == 5:
            rec.update(team=None, expected_close_date="2031-01-31T00:00:00Z", amount=int(rec.get("amount") or 0))
        elif kind == 6:
            for h in rec["stage_history"]:
                h["expected_close_date"] = "2030-12-01T00:00:00"
    return out


def from_model(raw: bytes, meta):
    request = ScoreRequest.model_validate_json(raw)
    return payload_arrays(request.deals, meta), request


def assert_same_payload(got, want) -> None:
    assert got.rejects == want.rejects
    a, b = got.arrays, want.arrays
    assert a.deal_id.tolist() == b.deal_id.tolist()
    for name in ("created_at", "amount"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.fields.keys() == b.fields.keys()
    for name in a.fields:
        np.testing.assert_array_equal(a.fields[name], b.fields[name], err_msg=name)
    for table in ("events", "activities"):
        x, y = getattr(a, table), getattr(b, table)
        assert (x is None) == (y is None), table
        for name in x or {}:
            np.testing.assert_array_equal(x[name], y[name], err_msg=f"{table}.{name}")
    np.testing.assert_array_equal(a.activity_known, b.activity_known)
    assert got.facts.keys() == want.facts.keys()
    for name in got.facts:
        for x, y in zip(got.facts[name], want.facts[name]):
            np.testing.assert_array_equal(x, y, err_msg=name)


def test_a_clean_body_reads_as_the_request_model_reads_it(data, records):
    raw = body(clean_variants(records), as_of="2030-01-01T00:00:00Z", explain=False)
    fields = decode_score(raw, data.meta)
    assert fields is not None, "a clean body takes the columnar path"
    assert isinstance(fields["deals"], PayloadColumns)
    want, request = from_model(raw, data.meta)
    assert {k: v for k, v in fields.items() if k != "deals"} == {"as_of": request.as_of, "explain": False}
    assert_same_payload(checked_payload(fields["deals"], data.meta), want)


def test_the_request_paths_own_rejects_come_out_the_same(data, records):
    """Unknown stages and times before creation are the request path's checks, not the
    model's: they run on the columns as on the model's dicts (same paths and details)."""
    deals = copy.deepcopy(records[:6])
    deals[0]["stage"] = deals[0]["stage_history"][-1]["stage"] = "nowhere"
    deals[1]["stage_history"][0]["stage"] = "limbo"
    deals[2]["stage_history"][0]["entered_at"] = "2000-01-01T00:00:00"
    deals[3]["activities"] = [{"occurred_at": "1999-12-31T23:00:00Z", "type": "call"}]
    deals[4].pop("stage_history")
    deals[4]["stage"] = "void"
    raw = body(deals)
    fields = decode_score(raw, data.meta)
    assert fields is not None
    got = checked_payload(fields["deals"], data.meta)
    assert {"unknown_stage", "event_before_create"} <= {r.reason for r in got.rejects}
    assert_same_payload(got, from_model(raw, data.meta)[0])


def _declined_cases(records: list[dict]) -> dict[str, object]:
    def changed(change) -> list[dict]:
        deals = copy.deepcopy(records[:3])
        change(deals)
        return deals

    first_entry = lambda deals: deals[0]["stage_history"][0]  # noqa: E731
    return {
        "unknown deal key": changed(lambda d: d[0].update(industy="x")),
        "unknown history key": changed(lambda d: first_entry(d).update(note="x")),
        "padded owner": changed(lambda d: d[0].update(owner=" owner_1")),
        "padded stage": changed(lambda d: [d[0].update(stage=d[0]["stage"] + " "),
                                           d[0]["stage_history"][-1].update(stage=d[0]["stage"])]),
        "padded id": changed(lambda d: d[0].update(deal_id="D1 ")),
        "empty id": changed(lambda d: d[0].update(deal_id="")),
        "long id": changed(lambda d: d[0].update(deal_id="x" * 201)),
        "repeated id": changed(lambda d: d[1].update(deal_id=d[0]["deal_id"])),
        "negative amount": changed(lambda d: d[0].update(amount=-1)),
        "negative history amount": changed(lambda d: first_entry(d).update(amount=-1.5)),
        "numeric attribute as text": changed(lambda d: d[0].update(company_size="12")),
        "category as a number": changed(lambda d: d[0].update(industry=5)),
        "a boolean amount": changed(lambda d: d[0].update(amount=True)),
        "date without time": changed(lambda d: d[0].update(created_at="2024-01-01")),
        "time with an offset": changed(lambda d: d[0].update(created_at="2024-01-01T00:00:00+01:00")),
        "fractional seconds": changed(lambda d: d[0].update(created_at="2024-01-01T00:00:00.5")),
        "space separator": changed(lambda d: first_entry(d).update(entered_at=first_entry(d)["entered_at"]
                                                                   .replace("T", " "))),
        "no such day": changed(lambda d: d[0].update(created_at="2023-02-29T00:00:00")),
        "null created_at": changed(lambda d: d[0].update(created_at=None)),
        "null entered_at": changed(lambda d: first_entry(d).update(entered_at=None)),
        "history out of order": changed(lambda d: d[0]["stage_history"].reverse()),
        "stage differs from history": changed(lambda d: d[0].update(stage="won-ish")),
        "stage entered before creation": changed(lambda d: [d[0].pop("stage_history"),
                                                            d[0].update(stage_entered_at="2000-01-01T00:00:00")]),
        "no deals": [],
    }


def test_anything_the_request_model_would_read_otherwise_is_declined(data, records):
    assert decode_score(body(copy.deepcopy(records[:3])), data.meta) is not None  # the cases' starting point
    for case, deals in _declined_cases(records).items():
        assert decode_score(body(deals), data.meta) is None, case
    for case, raw in {"not JSON": b'{"deals": [', "a list": b"[1]", "infinite amount": b'{"deals": [{"deal_id": "a", '
                      b'"created_at": "2024-01-01T00:00:00", "stage": "lead", "amount": Infinity}]}',
                      "unknown top-level field": body(records[:1], asof="2024-01-01T00:00:00"),
                      "explain null": body(records[:1], explain=None),
                      "unknown explain method": body(records[:1], explain_method="lime"),
                      "as_of not a date": body(records[:1], as_of="yesterday")}.items():
        assert decode_score(raw, data.meta) is None, case


def test_options_are_validated_by_the_request_models_own_rules(data, records):
    """as_of, explain and explain_method go through ScoreRequest's field validators (lax
    pydantic: "false" is False), so they can never read differently."""
    fields = decode_score(body(records[:1], explain="false", as_of="2024-05-01T10:00:00+02:00"), data.meta)
    request = ScoreRequest.model_validate_json(body(records[:1], explain="false", as_of="2024-05-01T10:00:00+02:00"))
    assert fields["explain"] is request.explain is False
    assert fields["as_of"] == request.as_of and fields["as_of"].utcoffset() == dt.timedelta(hours=2)


@pytest.mark.parametrize("n", [5, 400])  # one by one, and computed from the digits
def test_iso_times_equal_fromisoformat(n):
    rng = np.random.default_rng(n)
    seconds = rng.integers(0, 300 * 365 * 86400, n)
    moments = [dt.datetime(1900, 1, 1) + dt.timedelta(seconds=int(s)) for s in seconds]
    text = [m.strftime("%Y-%m-%dT%H:%M:%S") + ("", "Z", "+00:00")[i % 3] if i % 7 else None
            for i, m in enumerate(moments) if m.year < 2200]
    want = times([None if t is None else dt.datetime.fromisoformat(t) for t in text])
    np.testing.assert_array_equal(iso_times(text), want)
    for other in ("2024-02-30T00:00:00", "2024-01-01T24:00:00", "2024-01-01T00:00:60", "2024-01-01 00:00:00",
                  "2024-01-01T00:00:00z", "2024-01-01T00:00:00+01:00", "1899-12-31T23:59:59", "2200-01-01T00:00:00",
                  "\uff12024-01-01T00:00:00", "2024-01-01T00:00:00.000", "2024-01-01", 20240101,
                  "2024-01-01T00:1/:00", "2024-01-01T00:00:0:"):  # the bytes next to "0" and "9"
        assert iso_times([*text, other]) is None, other


def _request(raw: bytes):
    from starlette.requests import Request

    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": raw, "more_body": False}

    return Request({"type": "http", "method": "POST", "path": "/score", "headers": [
        (b"content-type", b"application/json")], "query_string": b""}, receive)


@pytest.fixture
def json_serde():
    """BentoML's JSONSerde, its parsing restored after the test."""
    from _bentoml_impl.serde import JSONSerde

    saved = {k: v for k, v in vars(JSONSerde).items() if k == "parse_request" or k.startswith("_leadscore_columnar")}
    yield JSONSerde
    for key in [k for k in vars(JSONSerde) if k.startswith("_leadscore_columnar")]:
        delattr(JSONSerde, key)
    for key, value in saved.items():
        setattr(JSONSerde, key, value)


def test_bentomls_json_parsing_hands_score_the_columns_of_a_clean_body(data, records, json_serde):
    JSONSerde = json_serde

    class Request(ScoreRequest):  # BentoML subclasses the input_spec
        pass

    install_columnar_score(lambda: data.meta, 0, 2**21, 2**18)
    small = asyncio.run(JSONSerde().parse_request(_request(body(records[:2])), Request))
    assert isinstance(small.deals, PayloadColumns)
    install_columnar_score(lambda: data.meta, 2**16, 2**21, 2**18)  # a few deals: the request model reads them
    assert isinstance(asyncio.run(JSONSerde().parse_request(_request(body(records[:2])), Request)).deals, list)
    install_columnar_score(lambda: data.meta, 0, 2**21, 2**18)
    clean = asyncio.run(JSONSerde().parse_request(_request(body(records[:2])), Request))
    assert isinstance(clean, Request) and isinstance(clean.deals, PayloadColumns) and clean.explain is True
    padded = copy.deepcopy(records[:2])
    padded[0]["owner"] = " x"
    other = asyncio.run(JSONSerde().parse_request(_request(body(padded)), Request))
    assert isinstance(other.deals, list) and other.deals[0]["owner"] == "x"  # the model's reading: stripped


def test_the_same_score_answer_byte_for_byte(data, records):
    """Slow (a trained predictor): /score's response from the columns equals the one from the model's dicts."""
    from serving.batching import ScoreBatcher
    from serving.request import score_request
    from training.compiled import CompiledPredictor

    model = CompiledPredictor.compile(models_cache.small_predictor())
    as_of = (data.data_end - pd.Timedelta(days=60)).isoformat()
    for raw in (body(clean_variants(records), as_of=as_of), body(records[:1], as_of=as_of, explain_method="shap"),
                body(records[:5], as_of="2000-01-01T00:00:00")):
        fields = decode_score(raw, model.meta)
        assert fields is not None
        request = ScoreRequest.model_validate_json(raw)
        answers = [asyncio.run(score_request(model, ScoreBatcher(model), deals, pd.Timestamp(request.as_of),
                                             request.explain and request.explain_method, 1))
                   for deals in (fields["deals"], request.deals)]
        assert answers[0].status_code == answers[1].status_code
        assert answers[0].body == answers[1].body

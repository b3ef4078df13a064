"""Large bodies validated in the body-parsing process (serving/big_bodies.py): the request
the endpoint gets, and the field errors of an invalid body, are exactly those of validating
in the worker; the pieces are small; a child that died is replaced."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import psutil
import pytest
from _bentoml_sdk.io_models import ensure_io_descriptor
from pydantic import BaseModel, ValidationError

from serving import big_bodies
from serving.schemas import ForecastRequest, ScoreRequest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def io_model():
    return ensure_io_descriptor(ScoreRequest)  # what BentoML validates a /score body with


def _body(n_deals: int, n_activities: int, **change) -> bytes:
    deal = json.loads((ROOT / "docs" / "score_request.json").read_text())["deals"][0]
    acts = [{"occurred_at": f"2024-{1 + i % 9:02d}-{1 + i % 28:02d}T10:00:00", "type": ["call", None][i % 2]}
            for i in range(n_activities)]
    deals = [{**deal, "deal_id": f"D-{i}", "activities": acts, "owner": None, **change} for i in range(n_deals)]
    return json.dumps({"deals": deals, "as_of": "2024-12-20T00:00:00"}).encode()


def _fields(model: BaseModel) -> dict:
    return {name: getattr(model, name) for name in type(model).model_fields}


def test_the_request_model_is_found_by_name(io_model):
    assert big_bodies.importable_base(io_model) == "serving.schemas:ScoreRequest"
    assert big_bodies.importable_base(ensure_io_descriptor(ForecastRequest)) == "serving.schemas:ForecastRequest"
    local = type("Local", (BaseModel,), {"__annotations__": {"x": int}, "__qualname__": "f.<locals>.Local"})
    assert big_bodies.importable_base(ensure_io_descriptor(local)) is None  # validated in a thread instead


def test_pieces_are_small_and_assemble_to_the_same_request(io_model):
    body = _body(3, 5 * big_bodies.PIECE_ITEMS + 7)
    fields = _fields(io_model.model_validate_json(body))
    parts = list(big_bodies.pieces(fields))
    assert big_bodies.assemble(parts) == fields
    # no piece holds more than PIECE_ITEMS activities (what bounds a stall of the loop)
    activities = [pickle.loads(blob) for _op, path, blob in parts if path[-1:] == ("activities",)]
    assert max(map(len, activities)) == big_bodies.PIECE_ITEMS
    assert sum(map(len, activities)) == 3 * (5 * big_bodies.PIECE_ITEMS + 7)
    deals = [pickle.loads(blob)[0] for _op, path, blob in parts if path == ("deals",) and pickle.loads(blob)]
    assert [len(d["activities"]) for d in deals] == [0, 0, 0]  # sent apart


def test_the_child_validates_as_the_worker_would(io_model):
    path = big_bodies.importable_base(io_model)
    good = _body(2, 3000)
    got = big_bodies.build_model(io_model, big_bodies._CHILD.validate(path, good))
    assert type(got) is io_model
    assert _fields(got) == _fields(io_model.model_validate_json(good))  # None values dropped, dates parsed
    bad = _body(2, 3000, amount=-1).replace(b'"2024-01-01T10:00:00"', b'"2024-13-01T10:00:00"', 1)
    with pytest.raises(ValidationError) as expected:
        io_model.model_validate_json(bad)
    with pytest.raises(ValidationError) as from_child:
        big_bodies.build_model(io_model, big_bodies._CHILD.validate(path, bad))
    seen = dict(include_url=False, include_context=False, include_input=False)  # what BentoML reports
    assert from_child.value.errors(**seen) == expected.value.errors(**seen)
    assert len(from_child.value.errors()) == 3  # two amounts and one date
    with pytest.raises(ValidationError) as broken:
        big_bodies.build_model(io_model, big_bodies._CHILD.validate(path, good[:-3]))
    assert broken.value.errors()[0]["type"] == "json_invalid"


def test_a_child_that_died_is_replaced(io_model):
    path = big_bodies.importable_base(io_model)
    body = _body(1, 10)
    big_bodies._CHILD.validate(path, body)
    children = [psutil.Process(pid) for pid in big_bodies._CHILD._pool._processes]
    assert children
    for child in children:
        child.kill()
    psutil.wait_procs(children, timeout=10)
    with pytest.raises(big_bodies.BrokenProcessPool):  # this request: validated in the worker instead
        big_bodies._CHILD.validate(path, body)
    got = big_bodies.build_model(io_model, big_bodies._CHILD.validate(path, body))  # a new child
    assert _fields(got) == _fields(io_model.model_validate_json(body))

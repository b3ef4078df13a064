"""`/score`'s body read straight into payload columns, for the clean requests.

BentoML validates a body with the request model (`serving.schemas.ScoreRequest`, pydantic)
into ~100,000 Python objects for 1,000 deals, which `features.payload` then reads back into
arrays. Here the body is decoded once by msgspec into typed structs (strict types, unknown
fields refused), read into `features.payload.PayloadColumns` (times computed from their
digits a column at a time: `features.payload_values.iso_times`) and checked for what the
request model would refuse or read another way.

Only a clean body takes this path. On anything else (JSON that does not decode, an unknown
field, a wrong type, a value the model would strip, reject or convert, a time not of the
usual form) `decode_score` answers None and the body goes to the request model, whose
answers (every 4xx, its field paths, the warnings) stay the reference: this module decides
"clean" or "let the full path speak" and words no error. The request path's own checks
(`features.payload.checked_payload`: stages, dates against creation and as-of) run on these
columns as on the model's dicts. The OpenAPI spec still comes from the request model.

Small bodies (under `COLUMNAR_BODY_BYTES`: a few deals) stay with the request model: there
its C parse and the checks on dicts cost what the decode and the time check cost here
(one deal with 32 stage changes and 57 activities: 0.36 vs 0.45 ms CPU), and the columns
pay off from a few dozen deals on (1,000 deals: ~60 vs ~35 ms).
"""
from __future__ import annotations

import functools
import logging
from operator import attrgetter
from typing import Annotated, Any, Callable, Optional

import msgspec
import numpy as np
from pydantic import BaseModel, TypeAdapter, ValidationError

from features.arrays import NAT
from features.payload import HISTORY_FIELDS, PAYLOAD_FIELDS, PayloadColumns, implied_entry
from features.payload_values import iso_times
from features.schema import DEAL_CATEGORICAL, DatasetMeta
from serving.schemas import STRICT, ScoreRequest

log = logging.getLogger("leadscore.serving")
MAX_ID_LENGTH = 200  # ScoreRequest's deal_id max_length
TIME_FIELDS = ("created_at", "stage_entered_at", "expected_close_date")
OPTIONS = ("as_of", "explain", "explain_method")  # ScoreRequest's fields besides `deals`
_ABSENT = msgspec.Raw(b"")
COLUMNAR_BODY_BYTES = 64 * 1024


class StageEntry(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    stage: str
    entered_at: str
    amount: Optional[float] = None
    expected_close_date: Optional[str] = None


class Activity(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    occurred_at: str
    type: Optional[str] = None


@functools.lru_cache(maxsize=8)
def _decoder(attributes: tuple[tuple[str, str], ...]) -> msgspec.json.Decoder | None:
    """A decoder of `ScoreRequest` bodies for a model with these declared attributes (None
    when an attribute shadows a deal field: those requests take the model's path)."""
    if {name for name, _ in attributes} & {*PAYLOAD_FIELDS, "stage_history", "activities"}:
        return None
    fields: list[tuple] = [("deal_id", str), ("created_at", str), ("stage", str), ("amount", Optional[float], None)]
    fields += [(name, Optional[str], None) for name in PAYLOAD_FIELDS if name not in dict.fromkeys(
        ["deal_id", "created_at", "stage", "amount"])]
    fields += [("stage_history", Optional[list[StageEntry]], None), ("activities", Optional[list[Activity]], None)]
    fields += [(name, Optional[float] if kind == "numeric" else Optional[str], None) for name, kind in attributes]
    deal = msgspec.defstruct("Deal", fields, forbid_unknown_fields=True)
    body = msgspec.defstruct("ScoreBody", [("deals", list[deal]), *[(name, msgspec.Raw, _ABSENT) for name in OPTIONS]],
                             forbid_unknown_fields=True)
    return msgspec.json.Decoder(body)


@functools.lru_cache(maxsize=1)
def _options() -> dict[str, TypeAdapter]:
    """The request model's own validators of its scalar fields (as_of, explain, explain_method)."""
    return {name: TypeAdapter(Annotated[(info := ScoreRequest.model_fields[name]).annotation, info], config=STRICT)
            for name in OPTIONS}


def decode_score(body: bytes, meta: DatasetMeta) -> dict[str, Any] | None:
    """The fields of `ScoreRequest` from a clean body, `deals` as `PayloadColumns`; None when
    the body is anything but clean (then the request model reads it)."""
    decoder = _decoder(tuple(meta.attributes.items()))
    if decoder is None:
        return None
    try:
        request = decoder.decode(body)
        options = {name: _options()[name].validate_json(bytes(raw))
                   for name in OPTIONS if len(raw := getattr(request, name))}
        columns = clean_columns(request.deals, meta.attributes)
    except (msgspec.MsgspecError, ValidationError):
        return None
    except Exception:  # anything unforeseen: the request model's path is the reference
        log.debug("columnar /score decoding gave way to the request model", exc_info=True)
        return None
    return None if columns is None else {"deals": columns, **options}


def clean_columns(deals: list, attributes: dict[str, str]) -> PayloadColumns | None:
    """Decoded deals as columns, or None when the request model would not take them as sent:
    no deal, an empty, long, repeated or space-padded id, a space-padded or empty stage or
    text field, a negative or infinite number, a time of another form, a history out of time
    order or not ending in the deal's stage, stage_entered_at before created_at."""
    if not deals:
        return None
    names = list(dict.fromkeys([*PAYLOAD_FIELDS, *attributes]))
    deal = {name: list(map(attrgetter(name), deals)) for name in names}
    histories = [d.stage_history or _implied(d) for d in deals]
    flat = [h for rows in histories for h in rows]
    history = {name: list(map(attrgetter(name), flat)) for name in HISTORY_FIELDS}
    history["deal"] = np.repeat(np.arange(len(deals)), list(map(len, histories)))
    sent = [d.activities is not None for d in deals]
    acts = [a for d in deals if d.activities for a in d.activities]
    activities = None if not any(sent) else {
        "deal": np.repeat(np.arange(len(deals)), [len(d.activities or ()) for d in deals]),
        "occurred_at": [a.occurred_at for a in acts]}
    numeric = [name for name, kind in attributes.items() if kind == "numeric"]
    if not _clean_text(deal, history) or not _clean_numbers(deal, history, numeric):
        return None
    if any(rows[-1].stage != d.stage for d, rows in zip(deals, histories) if d.stage_history):
        return None
    parsed = _parsed_times(deal, history, activities)
    if parsed is None:
        return None
    deal.update(parsed[0])
    history.update(parsed[1])
    if activities is not None:
        activities.update(parsed[2])
    entered, rows = history["entered_at"], history["deal"]
    if ((entered[1:] < entered[:-1]) & (rows[1:] == rows[:-1])).any():
        return None
    if (deal["stage_entered_at"] < deal["created_at"]).any():  # NaT compares False
        return None
    return PayloadColumns(deal, history, [bool(d.stage_history) for d in deals], activities, sent)


def _implied(deal) -> list[StageEntry]:
    entry = implied_entry(deal.stage, deal.stage_entered_at, deal.created_at, deal.amount, deal.expected_close_date)
    return [] if entry is None else [StageEntry(**entry)]


def _clean_text(deal: dict[str, list], history: dict[str, list]) -> bool:
    """Ids unique, 1-200 characters; stages not empty; no text the model would strip (its
    `str_strip_whitespace`: Python's `str.strip` removes every character it does)."""
    ids = deal["deal_id"]
    if len(set(ids)) < len(ids) or min(map(len, ids)) < 1 or max(map(len, ids)) > MAX_ID_LENGTH:
        return False
    stages = set(deal["stage"]) | set(history["stage"])
    if "" in stages:
        return False
    texts = set(ids) | stages
    for name in DEAL_CATEGORICAL:
        texts.update(deal[name])
    texts.discard(None)
    return all(text == text.strip() for text in texts)


def _clean_numbers(deal: dict[str, list], history: dict[str, list], numeric: list[str]) -> bool:
    """Amounts >= 0 and every number finite (the model's `ge=0`, `allow_inf_nan=False`)."""
    amounts = np.array(deal["amount"] + history["amount"], dtype="float64")  # None -> NaN
    if (amounts < 0).any() or np.isinf(amounts).any():
        return False
    return all(not np.isinf(np.array(deal[name], dtype="float64")).any() for name in numeric)


def _parsed_times(deal: dict, history: dict, activities: dict | None) -> tuple[dict, dict, dict] | None:
    """Every time of the request parsed by `iso_times`, column by column (a column of nulls
    only, e.g. no expected close date anywhere, is NaT without a look); None when one is
    not of the usual form (the model may read it otherwise) or a required time is null."""
    columns = [deal[name] for name in TIME_FIELDS] + [history["entered_at"], history["expected_close_date"]]
    if activities is not None:
        columns.append(activities["occurred_at"])
    if None in columns[0] or None in columns[3] or (activities is not None and None in columns[5]):
        return None  # a required time sent as null: the model's error
    parts = []
    for column in columns:
        parsed = np.full(len(column), NAT) if column.count(None) == len(column) else iso_times(column)
        if parsed is None:
            return None
        parts.append(parsed)
    return (dict(zip(TIME_FIELDS, parts[:3])), {"entered_at": parts[3], "expected_close_date": parts[4]},
            {} if activities is None else {"occurred_at": parts[5]})


def install_columnar_score(meta: Callable[[], DatasetMeta], min_bytes: int, max_bytes: int, thread_bytes: int) -> None:
    """Wraps BentoML's JSON request parsing (`_bentoml_impl.serde.JSONSerde.parse_request`):
    a `ScoreRequest` body of `min_bytes` up to `max_bytes` is decoded here when clean (in a
    worker thread from `thread_bytes` on), else by the wrapped parser. `meta`: the served
    model's dataset (its attributes), for the request being handled."""
    import anyio.to_thread
    from _bentoml_impl.serde import JSONSerde

    JSONSerde._leadscore_columnar = (meta, min_bytes, max_bytes, thread_bytes)
    if getattr(JSONSerde, "_leadscore_columnar_installed", False):
        return
    wrapped = JSONSerde.parse_request

    async def parse_request(self, request, cls: type[BaseModel]):
        if isinstance(cls, type) and issubclass(cls, ScoreRequest):
            meta_of, least, most, in_thread = JSONSerde._leadscore_columnar
            body = await request.body()
            if least <= len(body) < most:
                decode = functools.partial(decode_score, body, meta_of())
                fields = decode() if len(body) < in_thread else await anyio.to_thread.run_sync(decode)
                if fields is not None:
                    return cls.model_construct(**fields)
        return await wrapped(self, request, cls)

    JSONSerde.parse_request = parse_request
    JSONSerde._leadscore_columnar_installed = True

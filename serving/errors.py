"""Bad input -> 4xx with field-level messages (`deals[3].amount: ...`), never a 500.

Three sources of messages, one shape ({"error", "errors": [{"field", "message"}]}):
pydantic's schema errors (reshaped from BentoML's 400 by `RequestGuardMiddleware`, which
also enforces the body size limit), the ingestion validator's rejects, and the checks
against the request's `as_of`.
"""
from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
from pydantic import ValidationError
from starlette.responses import JSONResponse

from features.arrays import encode
from serving.auth import is_open_path, send_json

REASON_MESSAGES = {
    "duplicate_id": "deal_id repeats an earlier deal",
    "missing_required_field": "is required",
    "unparseable_date": "is not a date (use ISO 8601, e.g. 2024-05-01T09:30:00Z)",
    "unparseable_number": "is not a number",
    "negative_amount": "must be >= 0",
    "unknown_stage": "is not one of the model's stages",
    "event_before_create": "is before the deal's created_at",
    "event_after_close": "is after the deal closed",
    "unknown_deal": "belongs to no deal in the request",
}
REASON_FIELDS = {"duplicate_id": "deal_id", "negative_amount": "amount", "unknown_stage": "stage"}
CHILD_TIME = {"stage_events": ("stage_history", "entered_at"), "activities": ("activities", "occurred_at")}


def problem(status: int, error: str, errors: list[dict] | None = None) -> JSONResponse:
    """The error response every endpoint uses."""
    return JSONResponse({"error": error, "errors": errors or []}, status_code=status)


def field_path(loc) -> str:
    """("deals", 0, "amount") -> "deals[0].amount"."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def pydantic_errors(detail: list[dict]) -> list[dict]:
    return [{"field": field_path(e.get("loc", ())), "message": str(e.get("msg", "invalid value"))
             .removeprefix("Value error, ")} for e in detail]


# --- validator rejects -> fields of the request -------------------------------------

def reject_errors(rejects: pd.DataFrame, records: list[dict]) -> list[dict]:
    """Ingestion rejects (rows of the canonical tables built from `records`) as request
    field paths; a deal rejected for its own fields takes its children along silently."""
    if rejects.empty:
        return []
    owners = {"stage_events": _child_owners(records, "stage_history"),
              "activities": _child_owners(records, "activities")}
    out = []
    for rej in rejects.itertuples(index=False):  # rejects are few: one message each
        if rej.reason == "parent_deal_rejected":
            continue
        what = REASON_MESSAGES.get(rej.reason, rej.reason.replace("_", " "))
        if rej.table == "deals":
            name = REASON_FIELDS.get(rej.reason) or str(rej.detail).split("=")[0].split(" ")[0] or "deal"
            out.append({"field": f"deals[{rej.row}].{name}", "message": f"{what} ({rej.detail})"})
        else:
            deal, idx = owners[rej.table][int(rej.row)]
            nested, time_col = CHILD_TIME[rej.table]
            where = f"deals[{deal}].{nested}[{idx}]" if idx is not None else f"deals[{deal}].stage"
            name = REASON_FIELDS.get(rej.reason) or (time_col if "date" in rej.reason or "before" in rej.reason
                                                     or "after" in rej.reason else str(rej.detail).split("=")[0])
            out.append({"field": f"{where}.{name}", "message": f"{what} ({rej.detail})"})
    return out


def _child_owners(records: list[dict], nested: str) -> list[tuple[int, int | None]]:
    """(deal index, index in its list) of each child row, in the order payload.py builds them;
    index None for the single implied stage row of a deal sent without history."""
    owners = []
    for i, rec in enumerate(records):
        items = rec.get(nested) or []
        if items:
            owners.extend((i, j) for j in range(len(items)))
        elif nested == "stage_history" and rec.get("stage") is not None:
            owners.append((i, None))
    return owners


# --- checks against as_of and the model ---------------------------------------------

def future_errors(facts: dict[str, tuple[np.ndarray, np.ndarray]], as_of: pd.Timestamp) -> list[dict]:
    """Facts dated after `as_of` cannot be known at `as_of`: the request is inconsistent.
    `facts`: request field -> (deal position, time) of each dated fact (`CheckedPayload.facts`)."""
    out = []
    limit = np.datetime64(as_of)
    for name, (deal, times) in facts.items():
        late = times > limit
        if not late.any():  # the usual case
            continue
        first: dict[int, np.datetime64] = {}
        for i, t in zip(deal[late].tolist(), times[late]):
            first[i] = min(first.get(i, t), t)
        for i, t in first.items():
            out.append({"field": f"deals[{i}].{name}", "message": f"{pd.Timestamp(t).isoformat()} is after as_of "
                                                                  f"{as_of.isoformat()}: send as_of at or after "
                                                                  f"the deal's latest fact"})
    return out


def unknown_category_warnings(fields: dict[str, np.ndarray], categories: dict[str, pd.Index],
                              attribute_features: dict[str, str]) -> dict[int, list[str]]:
    """{deal position: ["owner 'x' was not seen in training; scored as unknown", ...]}.
    `fields`: the request's per-deal category columns (`DealArrays.fields`)."""
    warnings: dict[int, list[str]] = {}
    for col, values in fields.items():
        levels = categories.get(attribute_features.get(col, col))
        if levels is None or col == "stage" or values.dtype != object:
            continue
        codes = encode(levels, values, len(values))
        for pos in np.flatnonzero((codes < 0) & (values != None)):  # noqa: E711  (elementwise)
            warnings.setdefault(int(pos), []).append(f"{col} '{values[pos]}' was not seen in training; "
                                                     f"scored as unknown")
    return warnings


# --- logs -------------------------------------------------------------------------------

BENTOML_APP_LOGGER = "bentoml._internal.server.http_app"


class SchemaErrorLogFilter(logging.Filter):
    """BentoML logs every request that fails the input schema as an ERROR with a traceback.
    A bad payload is the client's mistake, answered with a field-level 422: one WARNING
    line (path, method, error count; never the values) says all there is to say."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ValidationError):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = "%s [%s]: request body fails the schema (%d field error(s)), answered 422"
            record.args = (*(record.args or ()), exc.error_count())
            record.exc_info = record.exc_text = None
        return True


# --- ASGI: body limit and schema-error reshaping -------------------------------------

class RequestGuardMiddleware:
    """413 for bodies over `max_body_bytes` (declared or streamed); BentoML's 400 for a
    schema error becomes 422 with field paths (400 stays for JSON that does not parse)."""

    def __init__(self, app, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or is_open_path(scope["path"]):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return await self._too_large(send)
        chunks, size, more = [], 0, True
        while more:  # a list of chunks: `body += chunk` copies a 2 MB body once per chunk
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_body_bytes:
                return await self._too_large(send)
        await self.app(scope, _replay(b"".join(chunks), receive), _ReshapeErrors(send))

    async def _too_large(self, send) -> None:
        await send_json(send, 413, {"error": f"request body over the limit of {self.max_body_bytes:,} bytes "
                                             f"(LEADSCORE_MAX_BODY_BYTES); send fewer deals per request",
                                    "errors": []})


def _replay(body: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


class _ReshapeErrors:
    """Wraps `send`: buffers a 400 response and rewrites it in the service's error shape."""

    def __init__(self, send):
        self.send = send
        self.start = None
        self.chunks: list[bytes] = []

    async def __call__(self, message):
        if message["type"] == "http.response.start" and message["status"] == 400:
            self.start = message
            return
        if self.start is None:
            return await self.send(message)
        self.chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            status, body = reshape_400(b"".join(self.chunks))
            await send_json(self.send, status, body)


def reshape_400(raw: bytes) -> tuple[int, dict]:
    """BentoML's {"error", "detail": [pydantic errors]} -> (status, service error body)."""
    try:
        payload = json.loads(raw)
    except ValueError:
        return 400, {"error": raw.decode(errors="replace")[:500] or "bad request", "errors": []}
    payload = payload[0] if isinstance(payload, list) and payload else payload
    detail = payload.get("detail") if isinstance(payload, dict) else None
    if not isinstance(detail, list):
        return 400, {"error": str(payload.get("error", "bad request")) if isinstance(payload, dict)
                     else "bad request", "errors": []}
    if any(e.get("type") == "json_invalid" for e in detail):
        return 400, {"error": "request body is not valid JSON", "errors": pydantic_errors(detail)}
    errors = pydantic_errors(detail)
    return 422, {"error": f"{len(errors)} invalid field(s); first: {errors[0]['field']}: {errors[0]['message']}"
                 if errors else "invalid request", "errors": errors}

"""Bad input -> 4xx with field-level messages (`deals[3].amount: ...`), never a 500.

Three sources of messages, one shape ({"error", "errors": [{"field", "message"}]}):
pydantic's schema errors (reshaped from BentoML's 400 by `RequestGuardMiddleware`, which
also enforces the body size limit), and the request path's field errors
(`training.request`: the ingestion validator's rejects, the checks against `as_of`).
"""
from __future__ import annotations

import json
import logging
from typing import Collection, Mapping

from pydantic import ValidationError
from starlette.responses import JSONResponse

from serving.auth import is_open_path, send_json
from serving.unknown_fields import unknown_key_message


def problem(status: int, error: str, errors: list[dict] | None = None) -> JSONResponse:
    """The error response every endpoint uses."""
    return JSONResponse({"error": error, "errors": errors or []}, status_code=status)


def field_path(loc) -> str:
    """("deals", 0, "amount") -> "deals[0].amount"."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def pydantic_errors(detail: list[dict], known: Collection[str] = ()) -> list[dict]:
    """pydantic's errors as {field, message}; a top-level field outside `known` (the request
    model's fields) is named with its close match ("unknown field 'asof'; did you mean 'as_of'?")."""
    return [{"field": field_path(e.get("loc", ())), "message": _message(e, known)} for e in detail]


def _message(error: dict, known: Collection[str]) -> str:
    loc = error.get("loc", ())
    if error.get("type") == "extra_forbidden" and len(loc) == 1:
        return unknown_key_message(str(loc[0]), known) if known else f"unknown field '{loc[0]}'"
    return str(error.get("msg", "invalid value")).removeprefix("Value error, ")


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


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(32), 127)} | {10: "\\n", 13: "\\r", 9: "\\t"}
ESCAPED_LOGGERS = ("leadscore.serving", "bentoml.access", BENTOML_APP_LOGGER)


def escape_control(text: str) -> str:
    """Control characters as visible escapes: a deal id or path with a newline cannot start
    a forged log line."""
    return text.translate(_CONTROL)


class ControlCharLogFilter(logging.Filter):
    """Formats the record's message once and escapes its control characters (the message
    only: a traceback's own newlines stay)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        escaped = escape_control(message)
        if escaped != message:
            record.msg, record.args = escaped, None
        return True


def escape_log_lines() -> None:
    """Installs `ControlCharLogFilter` on the service's loggers and BentoML's request loggers
    (a logger's filter sees only its own records, so each is named)."""
    for name in ESCAPED_LOGGERS:
        logging.getLogger(name).addFilter(ControlCharLogFilter())


# --- ASGI: body limit and schema-error reshaping -------------------------------------

class RequestGuardMiddleware:
    """415 for multipart bodies (BentoML would try to read them as files: a 500), 413 for
    bodies over `max_body_bytes` (declared or streamed); BentoML's 400 for a
    schema error becomes 422 with field paths (400 stays for JSON that does not parse)."""

    def __init__(self, app, max_body_bytes: int, request_fields: Mapping[str, Collection[str]] | None = None):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.request_fields = request_fields or {}  # route -> its request model's fields (close matches)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or is_open_path(scope["path"]):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers", []))
        if headers.get(b"content-type", b"").lower().startswith(b"multipart/"):
            return await send_json(send, 415, {"error": "the body must be JSON (Content-Type: application/json), "
                                                        "not multipart form data", "errors": []})
        declared = headers.get(b"content-length")
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
        await self.app(scope, _replay(b"".join(chunks), receive),
                       _ReshapeErrors(send, self.request_fields.get(scope["path"], ())))

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

    def __init__(self, send, known: Collection[str] = ()):
        self.send = send
        self.known = known
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
            status, body = reshape_400(b"".join(self.chunks), self.known)
            await send_json(self.send, status, body)


def reshape_400(raw: bytes, known: Collection[str] = ()) -> tuple[int, dict]:
    """BentoML's {"error", "detail": [pydantic errors]} -> (status, service error body);
    `known`: the request model's fields, for the close match of an unknown one."""
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
    errors = pydantic_errors(detail, known)
    return 422, {"error": f"{len(errors)} invalid field(s); first: {errors[0]['field']}: {errors[0]['message']}"
                 if errors else "invalid request", "errors": errors}

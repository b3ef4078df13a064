"""Large request bodies parsed off the event loop, and without holding it up.

BentoML's JSON serde validates a body (pydantic's `model_validate_json`) on the event loop.
In a thread that is not enough: pydantic-core holds the GIL for the whole parse (a 14 MB
single-deal body: ~0.4 s in one C call), and so does building the result's Python objects
in any other single call (`json.loads`, `pickle.loads`: ~0.25 s), so a small `/score` sent
meanwhile still waits that long.

- Bodies under `THREAD_BODY_BYTES` stay on the loop (a thread hop costs more than their parse).
- Bodies up to `PROCESS_BODY_BYTES` are validated in a thread (a stall of at most a few tens
  of ms).
- Larger bodies are validated in a child process (`_validate`: one, started on first use,
  shared by the requests). A body that fails validation is answered from the child's field
  errors, never parsed by the worker. A valid one comes back as pieces pickled separately
  (each deal without its long lists, then those lists `PIECE_ITEMS` entries at a time) that a
  worker thread unpickles one at a time: the GIL is released between pieces, so no stretch
  is longer than unpickling one piece (~1 ms). The request model is then built without
  validating again (`model_construct`): the child ran the same model's validators.

A request model that cannot be imported by name in the child (BentoML builds one from the
signature of an endpoint without `input_spec`) is validated in a thread. A child that dies
(killed, out of memory) is replaced on the next request; this one is validated in a thread.
"""
from __future__ import annotations

import importlib
import logging
import multiprocessing
import pickle
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Iterator

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

log = logging.getLogger("leadscore.serving")

THREAD_BODY_BYTES = 256 * 1024
PROCESS_BODY_BYTES = 2 * 2**20
PIECE_ITEMS = 1000  # list entries per pickled piece: ~1 ms to unpickle

Piece = tuple[str, tuple, bytes]  # ("set" | "extend", path from the request's fields, pickled value)


def install_off_loop_parsing(thread_bytes: int = THREAD_BODY_BYTES, process_bytes: int = PROCESS_BODY_BYTES) -> None:
    """Wraps `_bentoml_impl.serde.JSONSerde.parse_request` (the JSON request path of BentoML 1.4)."""
    import anyio.to_thread
    from _bentoml_impl.serde import JSONSerde, Payload

    if getattr(JSONSerde, "_leadscore_body_bytes", None) is not None:
        JSONSerde._leadscore_body_bytes = (thread_bytes, process_bytes)
        return
    original = JSONSerde.parse_request

    async def parse_request(self, request, cls):
        body = await request.body()  # starlette keeps it: the original reads the same bytes
        in_thread, in_process = JSONSerde._leadscore_body_bytes
        if len(body) < in_thread or getattr(cls, "multipart_fields", None):
            return await original(self, request, cls)
        model_path = importable_base(cls) if len(body) >= in_process else None
        if model_path is not None:
            try:
                outcome = await anyio.to_thread.run_sync(_CHILD.validate, model_path, body, abandon_on_cancel=True)
            except BrokenProcessPool:
                log.warning("the body-parsing process died; this request is validated in the worker")
            else:
                return await anyio.to_thread.run_sync(build_model, cls, outcome)
        payload = Payload((body,), metadata=request.headers)
        return await anyio.to_thread.run_sync(self.deserialize_model, payload, cls)

    JSONSerde._leadscore_body_bytes = (thread_bytes, process_bytes)
    JSONSerde.parse_request = parse_request


def importable_base(cls: type) -> str | None:
    """"module:QualName" of the request model `cls` is built on (BentoML subclasses the
    `input_spec`), when the child can import it by that name; else None."""
    for base in cls.__mro__:
        if not (isinstance(base, type) and issubclass(base, BaseModel)) or base is BaseModel:
            continue
        if "<" in base.__qualname__ or base.__module__.startswith(("pydantic", "_bentoml")):
            continue
        try:
            found = importlib.import_module(base.__module__)
            for part in base.__qualname__.split("."):
                found = getattr(found, part)
        except (ImportError, AttributeError):
            continue
        if found is base:
            return f"{base.__module__}:{base.__qualname__}"
    return None


class _Child:
    """One child process, started on first use and replaced when it dies."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    def validate(self, model_path: str, body: bytes) -> tuple[str, Any]:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
            pool = self._pool
        try:
            return pool.submit(_validate, model_path, body).result()
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            raise


_CHILD = _Child()


def _validate(model_path: str, body: bytes) -> tuple[str, Any]:
    """In the child: ("errors", pydantic's field errors) or ("pieces", the request's fields in pieces)."""
    module, _, qualname = model_path.partition(":")
    model: Any = importlib.import_module(module)
    for part in qualname.split("."):
        model = getattr(model, part)
    try:
        request = model.model_validate_json(body)
    except ValidationError as exc:
        return "errors", exc.errors(include_url=False, include_context=False, include_input=False)
    return "pieces", list(pieces({name: getattr(request, name) for name in model.model_fields}))


def pieces(fields: dict[str, Any]) -> Iterator[Piece]:
    """The request's fields as separately pickled pieces: a list field item by item, and an
    item's long list values (a deal's activities) `PIECE_ITEMS` entries at a time."""
    for name, value in fields.items():
        if not isinstance(value, list):
            yield "set", (name,), pickle.dumps(value)
            continue
        yield "set", (name,), pickle.dumps([])
        for i, item in enumerate(value):
            long = {} if not isinstance(item, dict) else {
                k: v for k, v in item.items() if isinstance(v, list) and len(v) > PIECE_ITEMS // 10}
            yield "extend", (name,), pickle.dumps([{**item, **dict.fromkeys(long, ())} if long else item])
            for key, entries in long.items():
                yield "set", (name, i, key), pickle.dumps([])
                for start in range(0, len(entries), PIECE_ITEMS):
                    yield "extend", (name, i, key), pickle.dumps(entries[start:start + PIECE_ITEMS])


def assemble(parts: list[Piece]) -> dict[str, Any]:
    """The inverse of `pieces`, unpickling one piece at a time (the GIL is free in between)."""
    fields: dict[str, Any] = {}
    for op, path, blob in parts:
        target = fields
        for step in path[:-1]:
            target = target[step]
        if op == "set":
            target[path[-1]] = pickle.loads(blob)
        else:
            target[path[-1]].extend(pickle.loads(blob))
    return fields


def build_model(cls: type[BaseModel], outcome: tuple[str, Any]) -> BaseModel:
    """The request model from the child's outcome, or its ValidationError (the same fields,
    types and messages as validating here would give)."""
    kind, found = outcome
    if kind == "errors":
        raise ValidationError.from_exception_data(cls.__name__, [
            {"type": PydanticCustomError(e["type"], e["msg"]),
             "loc": tuple(e["loc"]), "input": None} for e in found])
    return cls.model_construct(**assemble(found))

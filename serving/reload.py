"""The model a worker serves: pinned at start, moved only by a promotion, named in every response.

- `Served`: one immutable bundle (predictor, compiled model, batcher, version). The worker
  holds the current one in `SLOT`; `ModelVersionMiddleware` takes it once when a request
  arrives (`in_use()` then returns it for that request's handler), and stamps its version
  in the `X-Model-Version` header: the answer and its header name the version that made it.
- Pinning: the deployment hook resolves the champion once (`pin_version`), before the
  workers start, and writes it to a pin file whose path the workers inherit
  (LEADSCORE_PIN_FILE). A worker (re)starting loads the pinned version, not whatever the
  alias says at that moment.
- Reload (`Reloader`): every LEADSCORE_MODEL_RELOAD_S seconds a worker thread reads the
  `champion` alias; when a promotion moved it, the new version is loaded, its files checked
  (`training.registry.load_predictor`), compiled and warmed off the request path, then
  swapped in with one assignment, logged, and written to the pin file. A version that fails
  to load is logged once and the current one keeps serving. Requests in flight finish on
  the bundle they started with.
"""
from __future__ import annotations

import contextvars
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("leadscore.serving")
PIN_ENV = "LEADSCORE_PIN_FILE"
VERSION_HEADER = b"x-model-version"


@dataclass(frozen=True)
class Served:
    """What one version needs to answer requests."""

    predictor: Any  # training.predictor.LeadScorePredictor
    model: Any  # training.compiled.CompiledPredictor
    batcher: Any  # serving.batching.ScoreBatcher
    version: int


class Slot:
    """The worker's current bundle (replaced whole: a reader never sees half a swap)."""

    def __init__(self) -> None:
        self.served: Served | None = None


SLOT = Slot()
_request: contextvars.ContextVar[Served | None] = contextvars.ContextVar("leadscore_served", default=None)


def in_use() -> Served:
    """The bundle of the request being handled (taken when it arrived), else the current one."""
    served = _request.get() or SLOT.served
    if served is None:
        raise RuntimeError("no model loaded in this worker yet")
    return served


class ModelVersionMiddleware:
    """Takes the current bundle for the request and adds `X-Model-Version` to its response."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        served = SLOT.served
        if scope["type"] != "http" or served is None:
            return await self.app(scope, receive, send)
        _request.set(served)
        version = str(served.version).encode()

        async def stamped(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (VERSION_HEADER, version)]}
            await send(message)

        await self.app(scope, receive, stamped)


# --- pinning --------------------------------------------------------------------------------

def pin_version(version: int, env=None) -> Path:
    """Write the version workers start with to a pin file (a new one unless LEADSCORE_PIN_FILE
    names one) and export its path for the workers."""
    env = os.environ if env is None else env
    path = Path(env.get(PIN_ENV) or tempfile.mkstemp(prefix="leadscore-pin-", suffix=".txt")[1])
    write_pin(path, version)
    env[PIN_ENV] = str(path)
    return path


def write_pin(path: str | Path, version: int) -> None:
    """Atomically (write aside, rename): a worker starting meanwhile reads the old or the new."""
    path = Path(path)
    aside = path.with_name(f".{path.name}.{os.getpid()}")
    aside.write_text(f"{int(version)}\n")
    os.replace(aside, path)


def pinned_version_file(env=None) -> str | None:
    """The pin file the workers inherited, or None."""
    return (os.environ if env is None else env).get(PIN_ENV, "").strip() or None


def pinned_version(env=None) -> int | None:
    """The version in the pin file, or None when there is none (started without the hook)."""
    raw = pinned_version_file(env)
    if not raw or not Path(raw).is_file():
        return None
    text = Path(raw).read_text().strip()
    return int(text) if text.isdigit() else None


# --- reload on promotion -----------------------------------------------------------------------

class Reloader:
    """A daemon thread that follows the `champion` alias (see the module docstring)."""

    def __init__(self, every_s: float, champion: Callable[[], int | None], build: Callable[[int], Served],
                 pin_file: str | None = None) -> None:
        self.every_s, self.champion, self.build, self.pin_file = every_s, champion, build, pin_file
        self.failed: int | None = None  # the last version that would not load (tried once per promotion)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="leadscore-reload", daemon=True)

    def start(self) -> "Reloader":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - a store hiccup must not end the thread
                log.warning("model reload: could not read the champion alias; keeping version %s",
                            SLOT.served.version if SLOT.served else "?", exc_info=log.isEnabledFor(logging.DEBUG))

    def check(self) -> bool:
        """Swap in the champion when a promotion moved it; True when it did."""
        current = SLOT.served
        wanted = self.champion()
        if wanted is None or current is None or wanted == current.version or wanted == self.failed:
            return False
        try:
            fresh = self.build(wanted)
        except Exception as exc:  # noqa: BLE001 - the current version keeps serving
            self.failed = wanted
            log.error("model reload: champion v%s does not load (%s); still serving v%s",
                      wanted, " ".join(str(exc).split())[:300], current.version)
            return False
        SLOT.served = fresh
        self.failed = None
        if self.pin_file:
            write_pin(self.pin_file, wanted)
        log.warning("model reload: now serving v%s (was v%s): the champion alias moved", wanted, current.version)
        return True

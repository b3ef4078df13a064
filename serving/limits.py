"""Bounded work for the heavy endpoints (`/forecast`, `/pipeline`): a concurrency limit with
a short queue, a timeout, and a size budget, so one API key cannot run the host out of memory.

- `EndpointLimiter.run` runs the work in the limiter's own threads (off the event loop). At
  most `running` at once, `queued` more wait; beyond that the answer is 503 at once with
  `Retry-After`. Past `timeout_s` (counted from admission: the queue included, so the answer
  always comes before BentoML's own timeout) the client gets 503 with `Retry-After` and the work is
  cancelled: it runs under a `features.deadline.Deadline` and stops at its next checkpoint
  (the forecast checks between simulation blocks, segments, groups and past periods), so
  its memory is freed. Its slot stays taken until it has stopped: abandoned work still
  counts against the limit, which is what bounds the memory (the 16-requests-at-8-GB case).
- `forecast_size_error`: groups x periods x simulations over the budget is a 413 naming the limit.
- `as_of_error`: an as-of outside the dataset is a 422 naming `as_of` (`score_as_of_error`: one
  too late for close-date estimates).
"""
from __future__ import annotations

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

import pandas as pd
from starlette.responses import JSONResponse

from features.deadline import Cancelled, Deadline, run_until
from serving.errors import problem

T = TypeVar("T")


class EndpointLimiter:
    """At most `running` calls at once in dedicated threads, `queued` more waiting."""

    def __init__(self, name: str, running: int, queued: int, timeout_s: float):
        self.name, self.running, self.queued, self.timeout_s = name, running, queued, timeout_s
        self._slots = asyncio.Semaphore(running)
        self._admitted = 0  # running + waiting (+ timed out and still running)
        self._threads = ThreadPoolExecutor(max_workers=running, thread_name_prefix=f"leadscore-{name}")

    @property
    def retry_after_s(self) -> int:
        return max(1, math.ceil(self.timeout_s / 2))

    async def run(self, work: Callable[[], T]) -> T | JSONResponse:
        """`work()` in a worker thread, or a 503 with Retry-After when full or too slow."""
        if self._admitted >= self.running + self.queued:
            return self._busy(f"{self.name}: {self.running} running and {self.queued} queued requests "
                              f"(LEADSCORE_HEAVY_CONCURRENCY, LEADSCORE_HEAVY_QUEUE); retry later")
        self._admitted += 1
        loop = asyncio.get_running_loop()
        admitted_at, deadline = loop.time(), Deadline(self.timeout_s)  # the timeout counts the queue too
        try:
            await asyncio.wait_for(self._slots.acquire(), self.timeout_s)
        except asyncio.TimeoutError:
            self._admitted -= 1
            return self._too_slow()
        except BaseException:  # the client went away while queued: its place is free again
            self._admitted -= 1
            raise
        done = loop.run_in_executor(self._threads, run_until, deadline, work)
        done.add_done_callback(self._release)  # when the work really ends, not when the client gives up
        try:
            return await asyncio.wait_for(asyncio.shield(done), max(0.0, self.timeout_s - (loop.time() - admitted_at)))
        except (asyncio.TimeoutError, Cancelled):
            deadline.cancel()  # the work stops at its next checkpoint
            return self._too_slow()
        except asyncio.CancelledError:  # the client went away: stop the work too
            deadline.cancel()
            raise

    def _too_slow(self) -> JSONResponse:
        return self._busy(f"{self.name}: no answer within {self.timeout_s:g} s (LEADSCORE_TIMEOUT_S, waiting in the "
                          f"queue included); retry later or ask for fewer periods or groups")

    def _release(self, future) -> None:
        self._admitted -= 1
        self._slots.release()
        if not future.cancelled():
            future.exception()  # an abandoned, cancelled work's exception is expected: mark it seen

    def _busy(self, message: str) -> JSONResponse:
        response = problem(503, message)
        response.headers["Retry-After"] = str(self.retry_after_s)
        return response


def forecast_size_error(data, group_by: str | None, periods: int, n_sims: int, budget: int) -> JSONResponse | None:
    """413 when groups x periods x simulations exceeds `budget` (LEADSCORE_FORECAST_BUDGET)."""
    groups = 1
    if group_by is not None and group_by in data.deals.columns:
        groups = int(data.deals[group_by].nunique(dropna=False)) + 1  # + the total row
    size = groups * periods * n_sims
    if size <= budget:
        return None
    return problem(413, f"forecast of {groups} groups x {periods} periods x {n_sims} simulations = {size:,} cells; "
                        f"the limit is {budget:,} (LEADSCORE_FORECAST_BUDGET): ask for fewer periods or a coarser "
                        f"group_by", [{"field": "periods", "message": f"{size:,} cells over the limit of {budget:,}"}])


LATEST_SCORE_AS_OF = pd.Timestamp("9899-12-31")  # leaves a century for close-date estimates


def score_as_of_error(at: pd.Timestamp) -> JSONResponse | None:
    """422 naming `as_of` when its close-date estimates could pass year 9999 (they would fail
    the response schema, a field the server produced)."""
    if at <= LATEST_SCORE_AS_OF:
        return None
    message = f"as_of {at.date()} leaves no room for close-date estimates: at most {LATEST_SCORE_AS_OF.date()}"
    return problem(422, message, [{"field": "as_of", "message": message}])


def as_of_error(at: pd.Timestamp, data_start: pd.Timestamp, data_end: pd.Timestamp) -> JSONResponse | None:
    """422 naming `as_of` when it falls outside the dataset's dates."""
    if data_start <= at <= data_end:
        return None
    message = (f"as_of {at.date()} is outside the data, which runs from {data_start.date()} to "
               f"{data_end.date()}")
    return problem(422, message, [{"field": "as_of", "message": message}])


# --- header-read timeout ------------------------------------------------------------------
# Neither BentoML 1.4 nor uvicorn has one (uvicorn's `timeout_keep_alive` only covers the idle
# time after a response, and BentoML does not expose even that), so a client can hold a
# connection open forever by sending its headers a byte at a time. The HTTP protocol class of
# the worker's uvicorn is wrapped: a connection that starts a request (first bytes, or bytes
# after a finished response) must complete its headers within the limit or is closed.

def install_header_timeout(seconds: float) -> None:
    """Wraps uvicorn's h11 protocol (the one BentoML's worker uses without httptools)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    if getattr(H11Protocol, "_leadscore_header_timeout", None) is not None:
        H11Protocol._leadscore_header_timeout = seconds
        return
    received = H11Protocol.data_received
    made = H11Protocol.connection_made

    def connection_made(self, transport) -> None:
        made(self, transport)
        _arm(self)

    def data_received(self, data: bytes) -> None:
        _arm(self)
        received(self, data)

    H11Protocol._leadscore_header_timeout = seconds
    H11Protocol.connection_made = connection_made
    H11Protocol.data_received = data_received


def _waiting_for_headers(protocol) -> bool:
    return protocol.cycle is None or protocol.cycle.response_complete


def _arm(protocol) -> None:
    """Starts the header clock if the connection is between requests and none runs."""
    if getattr(protocol, "_header_timer", None) is None and _waiting_for_headers(protocol):
        protocol._header_timer = protocol.loop.call_later(type(protocol)._leadscore_header_timeout,
                                                          _expire, protocol, protocol.cycle)


def _expire(protocol, cycle_then) -> None:
    """No new request's headers since the clock started: close the connection."""
    protocol._header_timer = None
    if protocol.cycle is cycle_then and not protocol.transport.is_closing():
        protocol.transport.close()

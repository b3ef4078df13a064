"""Cooperative cancellation: a deadline that long computations check between chunks.

The service runs `/forecast` work in a thread that cannot be killed; instead the work
calls `checkpoint()` between simulation blocks, segments, groups and past periods, and
`checkpoint()` raises `Cancelled` once the deadline of the work running in this context
has passed or was cancelled. Outside `running_until` (the CLI, tests, training) it is a
counter increment and nothing else.

    deadline = Deadline(30)
    result = run_until(deadline, work)   # in the worker thread; Cancelled when too slow
    deadline.cancel()                    # from anywhere: the next checkpoint raises

`shielded()` runs a part that others will reuse (the forecast cache's preparation) to its
end even past the deadline: stopped half-way, its work would be lost and redone by the
next request, which on a busy machine can time out the same way, forever.
"""
from __future__ import annotations

import contextvars
import itertools
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")


class Cancelled(Exception):
    """The work ran past its deadline or was cancelled: stopped at a checkpoint."""


class Deadline:
    """A point in time (monotonic clock) plus a cancel switch, safe across threads."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self._at = None if seconds is None else time.monotonic() + float(seconds)
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def expired(self) -> bool:
        return self._cancelled.is_set() or (self._at is not None and time.monotonic() > self._at)

    def check(self) -> None:
        if self.expired:
            why = "cancelled" if self._cancelled.is_set() else f"past its deadline of {self.seconds:g} s"
            raise Cancelled(f"work stopped: {why}")


_current: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("leadscore_deadline", default=None)
_passed = itertools.count()  # checkpoints passed in this process (next() is atomic under the GIL)
_seen = [0]


def checkpoint() -> None:
    """Raise Cancelled when the deadline of the work running here has passed."""
    _seen[0] = next(_passed)
    deadline = _current.get()
    if deadline is not None:
        deadline.check()


def checkpoints_passed() -> int:
    """How many checkpoints this process has passed (for tests: work that stopped stops counting)."""
    return _seen[0]


def run_until(deadline: Deadline, work: Callable[[], T]) -> T:
    """`work()` with `deadline` checked at its checkpoints (call it in the thread that runs the work)."""
    token = _current.set(deadline)
    try:
        deadline.check()
        return work()
    except Cancelled as exc:  # without the work's frames: whatever they held is freed now
        raise exc.with_traceback(None) from None
    finally:
        _current.reset(token)


@contextmanager
def shielded() -> Iterator[None]:
    """Checkpoints inside do not raise; the deadline applies again after (its next checkpoint)."""
    token = _current.set(None)
    try:
        yield
    finally:
        _current.reset(token)

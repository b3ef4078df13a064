"""The service's score log writer: off the request path, bounded, outage-tolerant.

`/score` hands each request's scored columns to `ScoreLog.submit` (a constant-time append
under a lock: no row is built, no database touched on the request path). One daemon
thread turns them into score log rows and writes them in batches (`scores.insert_scores`,
one transaction per batch). When the store is down the batch is dropped and counted;
the first failure of an outage logs one WARNING line and the recovery one INFO line
(never one per request); `status()` gives the counters the service reports on `/status`.
At most `max_pending_rows` rows wait: beyond, new scores are dropped and counted, so an
outage can never grow the service's memory. Any failure of a write (not only the store's
errors) is counted and logged the same way: the writer thread never dies. Rows still queued
when the process is killed (at most `interval_s` + `defer_s` worth) are not logged; `close`
writes them.

Writing rows is Python work that holds the GIL (~30 ms per 1,000 rows): done while a request
is being answered, it slows that request down (a 1,000-deal `/score` by ~15 %, measured). With
`idle` (the service's "no request in flight"), the rows are written in chunks of `chunk_rows`,
each when the service is idle, or regardless once they have waited `defer_s` (a service that is
never idle still logs every second or so); `flush` and `close` never wait.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from training.store.connection import Store, open_store
from training.store.schema import utc_now
from training.store.scores import insert_scores

log = logging.getLogger(__name__)
IDLE_POLL_S = 0.002  # how often a deferred write looks whether the service is idle
Columns = Mapping[str, Any]  # scored output columns: deal_id, as_of, close_probability, score, tier, top_factors


def factor_names(top_factors: Any) -> list[str]:
    """The feature names of one deal's top factors (positive first), no values."""
    if not top_factors:
        return []
    return [f["feature"] for side in ("positive", "negative") for f in top_factors.get(side, ())]


def score_rows(scored: Columns, model_name: str, model_version: str | int) -> list[dict]:
    """Score log rows (`scores.FIELDS`) of scored output columns."""
    ids = list(scored["deal_id"])
    n = len(ids)
    factors = scored.get("top_factors")
    factors = [None] * n if factors is None else factors
    now = utc_now()  # a static (lead-export) model scores without an as-of: the time it scored
    as_of = [now if a is None else a for a in np.asarray(scored["as_of"]).astype("datetime64[us]").tolist()]
    return [{"deal_id": d, "as_of": a, "model_name": model_name, "model_version": str(model_version),
             "probability": p, "score": s, "tier": t, "top_factors": factor_names(f)}
            for d, a, p, s, t, f in zip(ids, as_of, np.asarray(scored["close_probability"], dtype=float).tolist(),
                                        np.asarray(scored["score"]).tolist(), list(scored["tier"]), factors)]


class ScoreLog:
    """A bounded queue of scored batches and the thread that writes them to the store at
    `url` (default: `LEADSCORE_STORE_URL` or the embedded file), opened on first write."""

    def __init__(self, url: str | None = None, *, max_pending_rows: int = 200_000, batch_rows: int = 5_000,
                 interval_s: float = 0.2, opener: Callable[[str | None], Store] = open_store,
                 idle: Callable[[], bool] | None = None, defer_s: float = 1.0, chunk_rows: int = 100) -> None:
        self.url, self.max_pending_rows, self.batch_rows, self.interval_s = url, max_pending_rows, batch_rows, interval_s
        self.idle, self.defer_s, self.chunk_rows = idle, defer_s, chunk_rows
        self._hurry = 0  # flush or close calls waiting: write without waiting for idle
        self._opener = opener
        self._store: Store | None = None
        self._pending: deque[tuple[Columns, str, str]] = deque()
        self._pending_rows = 0
        self._busy = 0  # rows taken by the writer and not yet written or dropped
        self._cond = threading.Condition()
        self.written = self.failed = self.dropped = self.outages = 0
        self._down = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="score-log", daemon=True)
        self._thread.start()

    def submit(self, scored: Columns, model_name: str, model_version: str | int) -> None:
        """Queue one request's scores; never blocks on the store, never raises."""
        n = len(scored["deal_id"])
        with self._cond:
            if self._pending_rows + n > self.max_pending_rows or self._closed:
                self.dropped += n
                return
            self._pending.append((scored, model_name, str(model_version)))
            self._pending_rows += n
            if self._pending_rows >= self.batch_rows:
                self._cond.notify()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything queued so far is written or dropped; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._hurry += 1
            self._cond.notify()
            try:
                while self._pending_rows or self._busy:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._cond.wait(min(left, 0.05))
            finally:
                self._hurry -= 1
        return True

    def status(self) -> dict:
        """Counters since start: rows written, rows lost to store failures, rows dropped
        because the queue was full, outages, rows waiting, and whether the store is down."""
        with self._cond:
            return {"written": self.written, "failed": self.failed, "dropped": self.dropped,
                    "outages": self.outages, "pending": self._pending_rows + self._busy, "store_down": self._down}

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, stop the thread, close the store."""
        self.flush(timeout_s)
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout_s)
        if self._store is not None:
            self._store.close()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._pending and not self._closed:
                    self._cond.wait(self.interval_s)
                if self._closed and not self._pending:
                    return
                batch = list(self._pending)
                self._pending.clear()
                self._busy, self._pending_rows = self._pending_rows, 0
            if batch:
                self._write(batch)
            with self._cond:
                self._busy = 0
                self._cond.notify_all()

    def _write(self, batch: Sequence[tuple[Columns, str, str]]) -> None:
        rows = [row for scored, name, version in batch for row in score_rows(scored, name, version)]
        deadline = time.monotonic() + self.defer_s
        step = max(1, len(rows) if self.idle is None else self.chunk_rows)
        done = 0
        try:
            self._store = self._store or self._opener(self.url)
            for done in range(0, len(rows), step):
                self._wait_for_idle(deadline)
                insert_scores(self._store, rows[done:done + step])
        except Exception as exc:  # noqa: BLE001 - the writer thread must outlive any failure: count it
            with self._cond:
                self.written += done
                self.failed += len(rows) - done
                first = not self._down
                self._down = True
                self.outages += first
            if first:  # one line per outage; the driver's message could quote rows: only its type
                log.warning("score log: store unavailable (%s); scores are counted as failed until it is back",
                            type(getattr(exc, "orig", None) or exc).__name__)
            return
        with self._cond:
            self.written += len(rows)
            recovered, self._down = self._down, False
        if recovered:
            log.info("score log: store back; %d score(s) not logged so far", self.failed)

    def _wait_for_idle(self, deadline: float) -> None:
        """Until the service is idle (`idle`), `deadline` passes, or a flush or close asks."""
        while self.idle is not None and not self.idle() and time.monotonic() < deadline \
                and not self._hurry and not self._closed:
            time.sleep(IDLE_POLL_S)

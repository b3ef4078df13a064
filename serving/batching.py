"""Concurrent `/score` requests scored together.

A small request (few deals, short histories) that finds nothing queued or being scored is
scored at once on the event loop: handing it to a worker thread and back costs more (~1.8 ms measured) than scoring one
deal (~1 ms). Anything else goes to a worker thread, so the loop keeps parsing requests;
those that arrive meanwhile queue up and become the next batch. Nothing waits on a timer;
a burst pays the model's fixed per-call cost (feature lookups, four LightGBM calls) once
instead of once per request, and a big request does not hold up small ones behind it.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import anyio.to_thread
import numpy as np

from features.arrays import DealArrays
from features.payload import PayloadColumns
from training.compiled import DealScorer, Explain, Scores

log = logging.getLogger("leadscore.serving")
INLINE_CHILD_ROWS = 2_000  # a few deals with huge histories are scored in a thread, not on the loop
LARGE_REQUEST_ROWS = 50_000  # deals + history and activity rows above which a request is checked in a thread


def child_rows(arrays: DealArrays) -> int:
    """Stage history and activity rows of `arrays`."""
    return len(arrays.events["deal"]) + (0 if arrays.activities is None else len(arrays.activities["deal"]))


def request_rows(deals: list[dict] | PayloadColumns) -> int:
    """Deals plus their stage history and activity entries, as sent."""
    if isinstance(deals, PayloadColumns):
        return deals.rows()
    return len(deals) + sum(len(d.get("stage_history", ())) + len(d.get("activities", ())) for d in deals)


@dataclass
class _Pending:
    arrays: DealArrays
    at: np.ndarray
    explain: Explain
    future: asyncio.Future = field(repr=False)


class ScoreBatcher:
    """`await batcher.score(arrays, at, explain)` -> that request's score columns (`explain`:
    passed to the scorer; only requests with equal values share a batch).

    `scorer.score_arrays(arrays, at, explain)` (the service's `CompiledPredictor`) scores
    deals with one as-of time per deal (so requests with different `as_of` share a batch);
    `max_deals` caps a batch (a request bigger than that is a batch on its own); requests
    of up to `inline_deals` deals are scored on the loop when the batcher is idle (0: never).
    """

    def __init__(self, scorer: DealScorer, max_deals: int = 1000, inline_deals: int = 20):
        self.scorer = scorer
        self.max_deals = max_deals
        self.inline_deals = inline_deals
        self._queue: list[_Pending] = []
        self._draining = False
        self.batches = 0  # counters for the tests
        self.requests = 0
        self.inline = 0

    async def score(self, arrays: DealArrays, at: np.ndarray, explain: Explain) -> Scores:
        if not self._draining and not self._queue and len(arrays) <= self.inline_deals \
                and child_rows(arrays) <= INLINE_CHILD_ROWS:
            self.inline += 1
            return self.scorer.score_arrays(arrays, at, explain)
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(arrays, at, explain, future))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._take()
                outcomes = await anyio.to_thread.run_sync(self._score_batch, batch)
                for pending, outcome in zip(batch, outcomes):
                    if pending.future.done():  # the client went away
                        continue
                    if isinstance(outcome, BaseException):
                        pending.future.set_exception(outcome)
                    else:
                        pending.future.set_result(outcome)
        finally:
            self._draining = False

    def _take(self) -> list[_Pending]:
        """The queued requests with the first one's `explain`, up to `max_deals` deals."""
        first = self._queue[0]
        batch, rest, deals = [], [], 0
        for pending in self._queue:
            fits = not batch or deals + len(pending.arrays) <= self.max_deals
            if pending.explain == first.explain and fits:
                batch.append(pending)
                deals += len(pending.arrays)
            else:
                rest.append(pending)
        self._queue = rest
        return batch

    def _score_batch(self, batch: list[_Pending]) -> list[Scores | BaseException]:
        self.batches += 1
        self.requests += len(batch)
        if len(batch) == 1:
            return [self._score_one(batch[0])]
        try:
            merged = self.scorer.score_arrays(DealArrays.concat([p.arrays for p in batch]),
                                   np.concatenate([p.at for p in batch]), batch[0].explain)
        except Exception:  # one request's deals broke the batch: score each alone, so only it fails
            log.exception("a batch of %d requests failed; scoring them one by one", len(batch))
            return [self._score_one(p) for p in batch]
        out, start = [], 0
        for pending in batch:
            stop = start + len(pending.arrays)
            out.append({name: values[start:stop] for name, values in merged.items()})
            start = stop
        return out

    def _score_one(self, pending: _Pending) -> Scores | BaseException:
        try:
            return self.scorer.score_arrays(pending.arrays, pending.at, pending.explain)
        except Exception as exc:  # handed to the request that caused it
            return exc

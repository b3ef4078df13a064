"""Sorted-array primitives of the point-in-time engine: runs of equal keys, running
sums and forward fills within runs, and the as-of search ("the latest fact of this key
dated at or before t") that `features.snapshots`, `features.history` and the generator
all use. Pure numpy: a one-deal request pays no pandas per-call overhead.
"""
from __future__ import annotations

import numpy as np

from features.schema import TIMESTAMP_DTYPE


def run_starts(keys: np.ndarray) -> np.ndarray:
    """True where a run of equal keys starts (and on the first row)."""
    out = np.empty(len(keys), dtype=bool)
    out[:1] = True
    np.not_equal(keys[1:], keys[:-1], out=out[1:])
    return out


def run_ends(keys: np.ndarray) -> np.ndarray:
    """True where a run of equal keys ends (and on the last row)."""
    out = np.empty(len(keys), dtype=bool)
    out[-1:] = True
    np.not_equal(keys[1:], keys[:-1], out=out[:-1])
    return out


def group_starts(keys: np.ndarray) -> np.ndarray:
    """For keys sorted into runs, the row where each row's run starts."""
    if not len(keys):
        return np.zeros(0, dtype="int64")
    first = run_starts(keys)
    return np.maximum.accumulate(np.where(first, np.arange(len(keys)), 0))


def group_cumsum(values: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Running sum within runs (see `group_starts`)."""
    total = np.cumsum(values)
    return total - (total - values)[start] if len(values) else values


def ffill_index(valid: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Index of the latest valid row at or before each row within its run (-1 if none)."""
    idx = np.maximum.accumulate(np.where(valid, np.arange(len(valid)), -1)) if len(valid) else start
    return np.where(idx >= start, idx, -1)


def shifted(values: np.ndarray, fill) -> np.ndarray:
    """values moved one row down, `fill` in the first row."""
    out = np.empty_like(values)
    out[:1] = fill
    out[1:] = values[:-1]
    return out


def take(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """values[index] with -1 -> missing (NaN / NaT)."""
    out = values[np.maximum(index, 0)] if len(values) else values.copy()
    missing = np.datetime64("NaT") if values.dtype.kind == "M" else np.nan
    return np.where(index >= 0, out, missing).astype(values.dtype)


def asof_positions(keys: np.ndarray, times: np.ndarray, query_keys: np.ndarray, query_times: np.ndarray,
                   strict: bool = False) -> np.ndarray:
    """Row of the latest fact with the same key dated <= query time (< when `strict`), or -1.

    The same answer as merge_asof(direction="backward", by=key) without its per-call
    overhead or sort requirement on the query side: `keys`/`times` must be sorted by
    (key, time). See `asof_index` and `asof_search`, its two halves.
    """
    return asof_search(asof_index(keys, times), keys, query_keys, query_times, strict)


def asof_index(keys: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The half of an as-of search that depends on the table only, so a fixed table (the
    model's history) builds it once: the sorted distinct times, and each row's (key, time
    rank) packed into one int64, ascending because rows are sorted by (key, time)."""
    t = times.astype(TIMESTAMP_DTYPE).view("int64")
    distinct = np.sort(t)  # np.unique hashes, several times slower here
    distinct = distinct[run_starts(distinct)]
    return distinct, keys.astype("int64") * (len(distinct) + 1) + np.searchsorted(distinct, t)


def asof_search(index: tuple[np.ndarray, np.ndarray], keys: np.ndarray, query_keys: np.ndarray,
                query_times: np.ndarray, strict: bool = False) -> np.ndarray:
    """`asof_positions` on a prepared `asof_index`: one searchsorted for the query times'
    ranks, one for the rows. Keys must be >= 0 (-1 = no match)."""
    distinct, packed = index
    q = query_times.astype(TIMESTAMP_DTYPE).view("int64")
    below = np.searchsorted(distinct, q, side="left" if strict else "right")  # table times < q (<= q)
    # the last row whose packed (key, rank) is at most (query key, below - 1)
    target = query_keys.astype("int64") * (len(distinct) + 1) + below - 1
    pos = np.searchsorted(packed, target, side="right") - 1
    found = (pos >= 0) & (query_keys >= 0)
    found &= keys[np.maximum(pos, 0)] == query_keys if len(keys) else False
    return np.where(found, pos, -1)

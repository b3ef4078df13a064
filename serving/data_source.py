"""The data behind `/forecast` and `/pipeline`: the canonical tables of `LEADSCORE_DATA`,
re-read when they change.

A new ingest replaces the folder's files (`features.dataset.write_dataset` swaps in a new
folder), so the files' inode, size and modification time say cheaply whether the data
changed: a handful of `stat` calls, at most every `LEADSCORE_DATA_CHECK_S` seconds (default
0: on every request). Only then are the tables read again and fingerprinted. Every answer
carries `DataSnapshot.used()`: where the data came from, its data end, its fingerprint and
when it was read.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from features.dataset import DATASET_FILES, read_dataset
from features.dates import utc_now
from features.jsonsafe import json_safe
from features.schema import CanonicalData
from training.forecast.track_record import dataset_fingerprint

log = logging.getLogger("leadscore.serving")

Stamp = tuple[tuple[str, int, int, int], ...]


@dataclass(frozen=True)
class DataSnapshot:
    """One reading of the data folder."""

    data: CanonicalData
    fingerprint: str
    loaded_at: pd.Timestamp
    source: str

    def used(self) -> dict:
        """The `data` block of an answer (`serving.report_schemas.DataUsed`), JSON-ready."""
        return json_safe({"source": self.source, "data_end": data_end(self.data),
                          "data_fingerprint": self.fingerprint, "loaded_at": self.loaded_at})


def data_end(data: CanonicalData) -> pd.Timestamp | None:
    """The data end, or None for a static export without dates."""
    try:
        return data.data_end
    except (KeyError, ValueError):  # no date columns, or all empty
        return None


def folder_stamp(folder: Path) -> Stamp:
    """(name, inode, size, mtime) of the folder and each dataset file in it: changes when
    an ingest writes the folder again."""
    stamp = []
    for name in (".", *sorted(DATASET_FILES)):
        try:
            st = os.stat(folder / name)
        except OSError:
            continue
        stamp.append((name, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(stamp)


class DataSource:
    """The current `DataSnapshot` of a canonical tables folder. `current()` re-reads the
    folder when its stamp changed since the last reading (checked at most every
    `check_every_s`). A reading that fails raises (the endpoint answers 409 in one line)
    and the next request tries again."""

    def __init__(self, folder: str | Path, check_every_s: float = 0.0,
                 check: Callable[[CanonicalData], None] | None = None, clock: Callable[[], float] = time.monotonic):
        self.folder = Path(folder)
        self.check_every_s = check_every_s
        self.check = check  # raises LeadscoreError for data the service must not use (another dataset)
        self.clock = clock
        self.reads = 0  # how many times the tables were read (tests, logs)
        self._snapshot: DataSnapshot | None = None
        self._stamp: Stamp | None = None
        self._checked_at = float("-inf")
        self._lock = threading.Lock()  # one reading at a time; requests meanwhile wait for it

    def current(self) -> DataSnapshot:
        """The snapshot of the folder as it is now (LeadscoreError when it cannot be read)."""
        now = self.clock()
        snapshot = self._snapshot
        if snapshot is not None and now - self._checked_at < self.check_every_s:
            return snapshot
        stamp = folder_stamp(self.folder)
        if snapshot is not None and stamp == self._stamp:
            self._checked_at = now
            return snapshot
        with self._lock:
            stamp = folder_stamp(self.folder)
            if self._snapshot is not None and self._stamp == stamp:  # read by a request that held the lock
                self._checked_at = now
                return self._snapshot
            # the stamp from before the reading: an ingest that ends meanwhile is read next time
            data = read_dataset(self.folder)
            if self.check is not None:
                self.check(data)
            self._snapshot = DataSnapshot(data=data, fingerprint=dataset_fingerprint(data),
                                          loaded_at=utc_now(),
                                          source=str(self.folder))
            self._stamp, self._checked_at = stamp, now
            self.reads += 1
            log.info("read LEADSCORE_DATA %s: data end %s, fingerprint %s", self.folder,
                     data_end(self._snapshot.data), self._snapshot.fingerprint[:12])
            return self._snapshot

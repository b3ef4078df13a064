"""`LEADSCORE_DATA` kept current from the CRM itself: the export a mapping describes (a SQL
query, or files) ingested again every `LEADSCORE_SOURCE_REFRESH_S` seconds.

    LEADSCORE_SOURCE_MAPPING=export/mapping.yaml LEADSCORE_SOURCE_REFRESH_S=300 LEADSCORE_DATA=data/crm

A background thread runs the same `features.sources.ingest` as `leadscore ingest` (rejects
go to the folder's `rejects.csv` and are counted, never dropped silently) into the data
folder, off the request path. The folder is written atomically, so `serving.data_source`
notices the new tables by their stamp and re-reads them at the next request: a new data
end and fingerprint in the answer's `data` block. A re-read that fails (the database is
down, the query breaks, a rejected mapping) leaves the folder as it was: the last good
tables keep being served, and `status()` (in every answer's `data.refresh`) says when the
last attempt failed, why, and since when the data is unchanged.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

from features.dates import utc_now
from features.sources import ingest
from serving.errors import escape_control

log = logging.getLogger("leadscore.serving")


class SourceRefresh:
    """Ingests `mapping` into `folder` now and every `every_s` seconds (`start`), or once
    (`refresh_once`) with `features.sources.ingest`."""

    def __init__(self, mapping: str | Path, folder: str | Path, every_s: float) -> None:
        self.mapping = Path(mapping)
        self.folder = Path(folder)
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._status: dict = {"mapping": str(self.mapping), "every_s": every_s, "ok": None, "last_attempt_at": None,
                              "last_success_at": None, "error": None, "rows_read": None, "rejected_rows": None}

    def refresh_once(self) -> bool:
        """One ingest; False (and the reason in `status()`) when it failed. Never raises:
        whatever breaks a re-read, the service keeps answering from the last good tables."""
        started = utc_now()
        try:
            report = ingest(self.mapping, self.folder)
        except Exception as exc:  # noqa: BLE001 - any failure of the source keeps the last good data
            reason = escape_control(" ".join(f"{type(exc).__name__}: {exc}".split()))[:500]
            log.warning("re-reading the source %s failed (the last good data stays in use): %s", self.mapping, reason)
            with self._lock:
                self._status.update(ok=False, last_attempt_at=started, error=reason)
            return False
        rows = int(report.counts["rows_in"].sum())
        with self._lock:
            self._status.update(ok=True, last_attempt_at=started, last_success_at=started, error=None,
                                rows_read=rows, rejected_rows=len(report.rejects))
        log.info("re-read the source %s into %s: %d rows, %d rejected", self.mapping, self.folder, rows,
                 len(report.rejects))
        return True

    def status(self) -> dict:
        """The `data.refresh` block of an answer (`serving.report_schemas.SourceRefreshed`)."""
        with self._lock:
            status = dict(self._status)
        status["unchanged_since"] = status["last_success_at"] if status["ok"] is False else None
        return status

    def start(self) -> "SourceRefresh":
        self._thread = threading.Thread(target=self._loop, name="leadscore-source-refresh", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.refresh_once()
            self._stop.wait(self.every_s)

"""Opening the store: which database, and an engine tuned for it.

`LEADSCORE_STORE_URL` (any SQLAlchemy URL, e.g. `postgresql+psycopg://user@host/db`) when
set, else an embedded SQLite file `store.db` next to the embedded MLflow database
(`training.tracking.tracking_uri`; by default both in `<cwd>/.leadscore/`). Opening
migrates the database to the latest schema version, so the CLI, the service and the
tests never see an old schema.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from features.errors import LeadscoreError
from training.store.schema import migrate
from training.store.transactions import WRITE
from training.tracking import EMBEDDED_DIR, tracking_uri

STORE_URL_ENV = "LEADSCORE_STORE_URL"
SQLITE_PREFIX = "sqlite:///"
SQLITE_BUSY_TIMEOUT_MS = 5000  # the CLI and the service may write to one file at once


class StoreUnavailable(LeadscoreError, RuntimeError):
    """The store's database cannot be reached or written."""


@dataclass
class Store:
    """An open store: its engine, and how many score writes failed since it was opened
    (the score log never raises into a request: it counts instead)."""

    engine: sa.Engine
    failed_score_writes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_failed_score_write(self) -> None:
        with self._lock:
            self.failed_score_writes += 1

    def close(self) -> None:
        self.engine.dispose()


def store_url() -> str:
    """`LEADSCORE_STORE_URL` if set, else an embedded SQLite file `store.db` next to the
    embedded MLflow database (`tracking.tracking_uri()`: `MLFLOW_TRACKING_URI`'s
    `sqlite:///` file, by default `<cwd>/.leadscore/mlflow.db`); with an MLflow server,
    `<cwd>/.leadscore/store.db`. Its folder is created here, on first use."""
    url = os.environ.get(STORE_URL_ENV, "").strip()
    if url:
        return url
    mlflow_uri = tracking_uri()
    if mlflow_uri.startswith(SQLITE_PREFIX) and mlflow_uri != SQLITE_PREFIX:
        folder = Path(mlflow_uri[len(SQLITE_PREFIX):]).parent
    else:
        folder = Path.cwd() / EMBEDDED_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return f"{SQLITE_PREFIX}{folder / 'store.db'}"


def open_store(url: str | None = None) -> Store:
    """The store at `url` (default: `store_url()`), migrated to the latest schema."""
    url = url or store_url()
    try:
        engine = sa.create_engine(url)
    except (sa.exc.ArgumentError, ImportError) as exc:
        # the URL itself is not echoed: it may hold a password
        raise StoreUnavailable(f"store URL ({STORE_URL_ENV}) unusable: {exc}; give a SQLAlchemy URL such as "
                               "sqlite:///path/store.db or postgresql+psycopg://user@host/db") from exc
    if engine.dialect.name == "sqlite":
        _tune_sqlite(engine)
    try:
        migrate(engine)
    except sa.exc.OperationalError as exc:
        engine.dispose()
        raise StoreUnavailable(f"store {engine.url.render_as_string(hide_password=True)} is unreachable: "
                               f"{exc.orig}; check {STORE_URL_ENV} and that the server runs") from exc
    return Store(engine)


def _tune_sqlite(engine: sa.Engine) -> None:
    """Write-ahead log (readers never block the writer; a commit needs no fsync of the
    database file), a busy timeout for concurrent writers, and real transactions around
    DDL too (pysqlite otherwise commits DDL on its own, so a migration could half-apply)."""

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # a writer takes the write lock at BEGIN: a read-then-write transaction could not
        # wait for a concurrent writer; readers keep plain BEGIN and never block writers
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE) else "BEGIN")

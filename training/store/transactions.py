"""Write transactions of the store (on SQLite, a writer takes the write lock at BEGIN;
see `connection._tune_sqlite`)."""
from __future__ import annotations

import contextlib
from typing import Iterator

import sqlalchemy as sa

WRITE = "leadscore_write"  # execution option marking a write transaction


@contextlib.contextmanager
def writing(engine: sa.Engine) -> Iterator[sa.Connection]:
    """One write transaction: committed on exit, rolled back on an exception."""
    with engine.connect() as conn:
        conn.execution_options(**{WRITE: True})
        with conn.begin():
            yield conn

"""Fixtures of the store tests: each test runs on an embedded SQLite file and on a real
PostgreSQL server (tests/conftest.py::postgres_server; marked e2e: it starts a server
process, so the fast tier runs the SQLite half)."""
from __future__ import annotations

import pytest

from training.store.connection import Store, open_store


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.e2e)])
def store_url(request, tmp_path) -> str:
    """A URL of an empty database: a SQLite file, or a new database on the test server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(store_url) -> Store:
    """An open, migrated, empty store."""
    opened = open_store(store_url)
    yield opened
    opened.close()

"""The schema and its migrations: an empty database and one at version 1 both end at the
latest version with exactly the columns the tables declare."""
from __future__ import annotations

from datetime import datetime

import pytest
import sqlalchemy as sa
from processes import free_port

from training.store.connection import STORE_URL_ENV, StoreUnavailable, open_store, store_url
from training.store.forecasts import forecasts
from training.store.schema import LATEST_VERSION, METADATA, MIGRATIONS, current_version, migrate


def _columns(engine: sa.Engine) -> dict[str, dict[str, bool]]:
    """{table: {column: nullable}} as the database reports it."""
    inspector = sa.inspect(engine)
    return {table: {c["name"]: bool(c["nullable"]) for c in inspector.get_columns(table)}
            for table in inspector.get_table_names()}


def test_an_empty_database_migrates_to_the_declared_tables(store_url):
    engine = sa.create_engine(store_url)
    assert migrate(engine) == LATEST_VERSION == len(MIGRATIONS)
    declared = {t.name: {c.name: bool(c.nullable) for c in t.columns} for t in METADATA.sorted_tables}
    assert _columns(engine) == declared
    with engine.connect() as conn:
        versions = conn.execute(sa.text("SELECT version FROM schema_version ORDER BY version")).scalars().all()
    assert versions == list(range(1, LATEST_VERSION + 1))
    engine.dispose()


def test_a_database_at_version_1_keeps_its_forecasts_and_gains_the_score_log(store_url):
    engine = sa.create_engine(store_url)
    assert migrate(engine, target=1) == 1
    assert "scores" not in sa.inspect(engine).get_table_names()
    with engine.begin() as conn:  # a forecast written by a version-1 build (its columns, frozen)
        conn.execute(sa.text(
            "INSERT INTO forecasts (as_of, period_start, period_end, freq, group_column, group_value, "
            "p10, p50, p90, model_name, model_version, created_at) VALUES "
            "(:as_of, :start, :end, 'month', '', '(all)', 1.0, 2.0, 3.0, 'leadscore', '1', :as_of)"),
            {"as_of": datetime(2024, 1, 10), "start": datetime(2024, 1, 1), "end": datetime(2024, 2, 1)})
    engine.dispose()

    store = open_store(store_url)
    with store.engine.connect() as conn:
        assert current_version(conn) == LATEST_VERSION
    assert {"scores", "erasures"} <= set(sa.inspect(store.engine).get_table_names())
    kept = forecasts(store)
    assert kept[["p10", "p50", "p90"]].values.tolist() == [[1.0, 2.0, 3.0]]
    assert kept["landing_p50"].isna().all()
    store.close()


def test_opening_twice_migrates_once(store_url):
    open_store(store_url).close()
    store = open_store(store_url)
    with store.engine.connect() as conn:
        assert current_version(conn) == LATEST_VERSION
        assert conn.execute(sa.text("SELECT count(*) FROM schema_version")).scalar() == LATEST_VERSION
    store.close()


def test_the_default_store_is_a_sqlite_file_next_to_the_mlflow_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(STORE_URL_ENV, raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert store_url() == f"sqlite:///{tmp_path / '.leadscore' / 'store.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    assert store_url() == f"sqlite:///{tmp_path / 'runs' / 'store.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert store_url() == f"sqlite:///{tmp_path / '.leadscore' / 'store.db'}"
    monkeypatch.setenv(STORE_URL_ENV, "postgresql+psycopg://u@db.example/leadscore")
    assert store_url() == "postgresql+psycopg://u@db.example/leadscore"


@pytest.mark.parametrize("url", ["not a url hunter2", "nosuchdialect://u:hunter2@x/y"])
def test_a_bad_url_is_a_one_line_error_that_does_not_echo_it(url):
    with pytest.raises(StoreUnavailable, match=STORE_URL_ENV) as refused:
        open_store(url)
    assert "hunter2" not in str(refused.value)


def test_an_unreachable_server_is_a_one_line_error():
    with pytest.raises(StoreUnavailable, match="unreachable"):
        open_store(f"postgresql+psycopg://leadscore@127.0.0.1:{free_port()}/leadscore")

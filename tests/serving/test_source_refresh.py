"""A SQL source re-read into LEADSCORE_DATA on an interval (serving/source_refresh.py): rows
changed in a real SQLite database reach the next answer's data with a new fingerprint,
rejects are counted, and a failing re-read keeps the last good data and says why."""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from serving.data_source import DataSource
from serving.loader import ConfigError, ServingConfig
from serving.source_refresh import SourceRefresh


def crm_rows(n: int) -> pd.DataFrame:
    """n deals: the first half won (closed 20 days after creation), the rest open."""
    created = pd.Timestamp("2024-01-01") + pd.to_timedelta(range(n), unit="D")
    won = pd.Series(range(n)) < n // 2
    return pd.DataFrame({"id": [f"D{i}" for i in range(n)], "created": created.strftime("%Y-%m-%d"),
                         "stage": ["Won" if w else "Proposal" for w in won], "amount": 1000.0,
                         "closed": [(c + pd.Timedelta(days=20)).strftime("%Y-%m-%d") if w else None
                                    for c, w in zip(created, won)]})


@pytest.fixture
def sql_source(tmp_path: Path) -> tuple[Path, sa.Engine, Path]:
    """(mapping file, engine of the SQLite CRM, data folder) with 10 deals ingested once."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'crm.db'}")
    crm_rows(10).to_sql("opportunities", engine, index=False)
    mapping = {"name": "sql_crm",
               "sources": {"crm": {"type": "sql", "url": f"sqlite:///{tmp_path / 'crm.db'}",
                                   "query": "SELECT * FROM opportunities"}},
               "stages": {"order": ["Qualification", "Proposal"], "won": ["Won"], "lost": ["Lost"]},
               "tables": {"deals": {"source": "crm", "outcome": {"from": "stage"},
                                    "columns": {"deal_id": "id", "created_at": "created", "stage": "stage",
                                                "amount": "amount", "closed_at": "closed"}}}}
    path = tmp_path / "mapping.yaml"
    path.write_text(yaml.safe_dump(mapping))
    yield path, engine, tmp_path / "data"
    engine.dispose()


def test_changed_rows_reach_the_next_reading_after_the_interval(sql_source):
    mapping, engine, folder = sql_source
    refresh = SourceRefresh(mapping, folder, every_s=0.2)
    assert refresh.refresh_once()
    source = DataSource(folder)
    before = source.current()
    assert len(before.data.deals) == 10 and refresh.status()["rows_read"] == 10
    with engine.begin() as conn:  # the CRM moves on: two new deals, one with a negative amount
        conn.execute(sa.text("INSERT INTO opportunities VALUES ('D10', '2024-03-01', 'Qualification', 500.0, NULL),"
                             " ('D11', '2024-03-02', 'Proposal', -5.0, NULL)"))
    assert source.current() is before  # nothing re-read the source yet
    refresh.start()
    try:
        deadline = time.monotonic() + 30
        while source.current().fingerprint == before.fingerprint and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        refresh.stop()
    after = source.current()
    assert after.fingerprint != before.fingerprint
    assert sorted(after.data.deals["deal_id"]) == sorted([f"D{i}" for i in range(11)])
    assert after.data.data_end > before.data.data_end
    status = refresh.status()
    assert status["ok"] and status["error"] is None and (status["rows_read"], status["rejected_rows"]) == (12, 1)
    assert pd.read_csv(folder / "rejects.csv")["deal_id"].tolist() == ["D11"]  # counted and kept, never dropped silently


def test_a_failing_reread_keeps_the_last_good_data_and_says_why(sql_source):
    mapping, engine, folder = sql_source
    refresh = SourceRefresh(mapping, folder, every_s=60)
    assert refresh.refresh_once()
    source = DataSource(folder)
    good = source.current()
    first = refresh.status()
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE opportunities RENAME TO gone"))
    assert not refresh.refresh_once()
    status = refresh.status()
    assert status["ok"] is False and "opportunities" in status["error"] and "\n" not in status["error"]
    assert status["unchanged_since"] == first["last_success_at"] == status["last_success_at"]
    assert source.current().fingerprint == good.fingerprint and len(source.current().data.deals) == 10


def test_a_source_mapping_needs_the_data_folder_and_an_existing_file(tmp_path):
    with pytest.raises(ConfigError, match="needs LEADSCORE_DATA"):
        ServingConfig.from_env({"LEADSCORE_SOURCE_MAPPING": str(tmp_path / "m.yaml")})
    with pytest.raises(ConfigError, match="no such mapping file"):
        ServingConfig.from_env({"LEADSCORE_SOURCE_MAPPING": str(tmp_path / "m.yaml"), "LEADSCORE_DATA": str(tmp_path)})
    with pytest.raises(ConfigError, match="LEADSCORE_SOURCE_REFRESH_S"):
        ServingConfig.from_env({"LEADSCORE_SOURCE_REFRESH_S": "soon"})


def test_every_answer_says_how_the_source_was_reread(sql_source):
    """The `data` block of /forecast and /pipeline (`LeadScoreService._used`): the tables used
    and the refresh status, valid against the documented `DataUsed`, times in UTC with "Z"."""
    from types import SimpleNamespace

    from serving.report_schemas import DataUsed
    from serving.service import LeadScoreService
    from serving.times import mark_utc

    mapping, engine, folder = sql_source
    refresh = SourceRefresh(mapping, folder, every_s=60)
    refresh.refresh_once()
    snapshot = DataSource(folder).current()
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE opportunities"))
    refresh.refresh_once()
    block = mark_utc(LeadScoreService.inner._used(SimpleNamespace(source=refresh), snapshot))
    DataUsed.model_validate(block)
    assert block["data_fingerprint"] == snapshot.fingerprint and block["refresh"]["ok"] is False
    assert block["refresh"]["unchanged_since"] == block["refresh"]["last_success_at"]
    assert block["refresh"]["unchanged_since"].endswith("Z") and block["loaded_at"].endswith("Z")
    assert LeadScoreService.inner._used(SimpleNamespace(source=None), snapshot) == snapshot.used()

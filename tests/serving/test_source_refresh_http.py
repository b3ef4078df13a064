"""A real `bentoml serve` keeping LEADSCORE_DATA current from a real PostgreSQL CRM
(`LEADSCORE_SOURCE_MAPPING` + `LEADSCORE_SOURCE_REFRESH_S`, serving/source_refresh.py): rows
added in the database between two requests reach the second answer, with a new data
fingerprint and data end, and the refresh status says how the re-read went."""
from __future__ import annotations

import time

import httpx
import models_cache
import pandas as pd
import sqlalchemy as sa
import yaml
from processes import stop_process_group

from features.dataset import read_dataset
from features.sources import ingest
from training.forecast.track_record import dataset_fingerprint

REFRESH_S = 1


def crm_table(data) -> pd.DataFrame:
    """The generated deals as one CRM table: current stage (Won / Lost once closed), close
    date and the two attributes the small model was trained with."""
    deals = data.deals
    last = data.stage_events.sort_values("entered_at", kind="stable").groupby("deal_id")["stage"].last()
    stage = deals["outcome"].map({"won": "Won", "lost": "Lost"}).fillna(deals["deal_id"].map(last))
    return pd.DataFrame({"id": deals["deal_id"], "created": deals["created_at"], "stage": stage.astype(str),
                         "amount": deals["amount"], "closed": deals["closed_at"],
                         "industry": deals["industry"].astype(object), "company_size": deals["company_size"]})


def crm_mapping(url: str, stages: list[str]) -> dict:
    return {"name": "postgres_crm",
            "sources": {"crm": {"type": "sql", "url": url, "query": "SELECT * FROM opportunities"}},
            "stages": {"order": stages, "won": ["Won"], "lost": ["Lost"]},
            "tables": {"deals": {"source": "crm", "outcome": {"from": "stage"},
                                 "columns": {"deal_id": "id", "created_at": "created", "stage": "stage",
                                             "amount": "amount", "closed_at": "closed"},
                                 "attributes": {"industry": {"column": "industry", "kind": "categorical"},
                                                "company_size": {"column": "company_size", "kind": "numeric"}}}}}


def test_rows_changed_in_postgres_reach_the_next_answer_of_a_running_service(postgres_url, server_kit, tmp_path):
    data, _truth = models_cache.small_data()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    server_kit.register(uri, tmp_path / "training_data")
    engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    table = crm_table(data)
    table.to_sql("opportunities", engine, index=False)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(yaml.safe_dump(crm_mapping(postgres_url, list(data.meta.stages))))
    folder = tmp_path / "crm"
    ingest(mapping, folder)  # the first ingest, as `leadscore ingest` before the first start
    env = server_kit.env(uri, folder, LEADSCORE_SOURCE_MAPPING=str(mapping), LEADSCORE_SOURCE_REFRESH_S=str(REFRESH_S))
    proc, url = server_kit.start(env, tmp_path / "bentoml.log")
    headers = {"Authorization": f"Bearer {server_kit.api_key}"}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
            first = client.post("/pipeline", json={})
            assert first.status_code == 200, first.text
            before = first.json()
            assert before["data"]["refresh"]["ok"] and before["data"]["refresh"]["rows_read"] == len(table)
            # the CRM moves on: three new open deals after the data end, one with a negative amount
            end = pd.Timestamp(before["data"]["data_end"].removesuffix("Z"))
            new = pd.DataFrame({"id": ["N1", "N2", "N3"], "created": [end + pd.Timedelta(days=d) for d in (1, 2, 3)],
                                "stage": ["lead", "proposal", "lead"], "amount": [5000.0, 7000.0, -1.0],
                                "closed": [pd.NaT] * 3, "industry": ["retail"] * 3, "company_size": [100.0] * 3})
            new.to_sql("opportunities", engine, index=False, if_exists="append")
            deadline = time.monotonic() + 60
            while True:  # re-read every REFRESH_S seconds; at most a minute on a busy machine
                second = client.post("/pipeline", json={})
                assert second.status_code == 200, second.text
                after = second.json()
                if after["data"]["data_fingerprint"] != before["data"]["data_fingerprint"] or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
    finally:
        stop_process_group(proc)
        engine.dispose()
    assert after["data"]["data_fingerprint"] != before["data"]["data_fingerprint"], "the re-read never arrived"
    assert after["data"]["data_fingerprint"] == dataset_fingerprint(read_dataset(folder))
    assert pd.Timestamp(after["data"]["data_end"].removesuffix("Z")) == end + pd.Timedelta(days=2)  # N3 is rejected
    assert after["total"]["funnel"]["open"] == before["total"]["funnel"]["open"] + 2
    refresh = after["data"]["refresh"]
    assert refresh["ok"] and refresh["error"] is None
    assert (refresh["rows_read"], refresh["rejected_rows"]) == (len(table) + 3, 1)
    assert pd.read_csv(folder / "rejects.csv")["deal_id"].tolist() == ["N3"]

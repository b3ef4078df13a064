"""The forecast track record and the score log: what goes in comes back, and a store
outage never raises into a request."""
from __future__ import annotations

import logging

import pandas as pd
import pytest
import sqlalchemy as sa
from processes import free_port
from store_rows import forecast_rows, score_row

from features.errors import LeadscoreError
from training.store.connection import Store
from training.store.forecasts import COLUMNS as FORECAST_COLUMNS
from training.store.forecasts import forecasts, record_forecasts
from training.store.schema import NO_GROUP
from training.store.scores import COLUMNS as SCORE_COLUMNS
from training.store.scores import IN_CHUNK, record_scores, scores


def test_a_forecast_comes_back_as_recorded(store):
    rows = pd.concat([forecast_rows(landing_p10=120.0, landing_p50=140.0, landing_p90=160.0, closed_so_far=40.0,
                                    data_fingerprint="ab" * 32),
                      forecast_rows(group_column="region", group_value="EU", as_of=pd.Timestamp("2024-01-11"))])
    assert record_forecasts(store, rows) == 2
    stored = forecasts(store)
    assert list(stored.columns) == list(FORECAST_COLUMNS)
    assert stored["group_column"].tolist() == [NO_GROUP, "region"]
    assert stored.loc[0, ["landing_p50", "closed_so_far"]].tolist() == [140.0, 40.0]
    assert stored.loc[1, ["landing_p50", "data_fingerprint"]].isna().all()
    assert stored.loc[0, "as_of"] == pd.Timestamp("2024-01-10")
    assert forecasts(store, group_column="region")["group_value"].tolist() == ["EU"]
    assert forecasts(store, freq="quarter").empty


def test_timezone_aware_times_are_stored_in_utc(store):
    record_forecasts(store, forecast_rows(as_of=pd.Timestamp("2024-01-10 12:00", tz="Europe/Paris")))
    assert forecasts(store).loc[0, "as_of"] == pd.Timestamp("2024-01-10 11:00")


def test_a_forecast_missing_a_column_is_refused_before_writing(store):
    with pytest.raises(LeadscoreError, match="model_version"):
        record_forecasts(store, forecast_rows().drop(columns="model_version"))
    assert forecasts(store).empty


def test_scores_come_back_with_their_factor_names(store):
    assert record_scores(store, [score_row("d1"), score_row("d2", model_version="4", top_factors=[])]) == 2
    logged = scores(store)
    assert list(logged.columns) == list(SCORE_COLUMNS)
    assert logged["deal_id"].tolist() == ["d1", "d2"]
    assert logged["top_factors"].tolist() == [["stage", "days_in_stage"], []]
    assert logged.loc[0, ["probability", "score", "tier"]].tolist() == [0.25, 25, "C"]
    assert scores(store, model_version="4")["deal_id"].tolist() == ["d2"]
    assert scores(store, since=logged["created_at"].max() + pd.Timedelta(seconds=1)).empty
    assert record_scores(store, []) == 0


def test_scores_of_many_deals_are_read_in_chunks(store):
    ids = [f"d{k}" for k in range(IN_CHUNK * 2 + 7)]
    assert record_scores(store, [score_row(i) for i in ids]) == len(ids)
    assert sorted(scores(store, deal_ids=ids[1:])["deal_id"]) == sorted(ids[1:])
    assert scores(store, deal_ids=[]).empty


def test_a_store_outage_is_counted_not_raised(caplog):
    down = Store(sa.create_engine(f"postgresql+psycopg://leadscore@127.0.0.1:{free_port()}/leadscore"))
    with caplog.at_level(logging.WARNING, logger="training.store.scores"):
        assert record_scores(down, [score_row("secret-deal-7")]) == 0
        assert record_scores(down, [score_row("secret-deal-8")]) == 0
    assert down.failed_score_writes == 2
    assert len(caplog.records) == 2 and "not written" in caplog.records[0].getMessage()
    assert "secret-deal" not in caplog.text  # no request value in the log


def test_a_store_that_lost_its_table_counts_the_failure(store):
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE scores")
    assert record_scores(store, [score_row("d1")]) == 0
    assert store.failed_score_writes == 1

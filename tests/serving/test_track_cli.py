"""The forecast track record end to end: forecasts made at 12 past monthly origins of a
small generated history are stored, `leadscore forecast-accuracy` compares them with the
bookings of the closed months, and its figures match a hand computation from the stored
rows; a store outage never fails the storing of a forecast (a note, a counted failure)."""
from __future__ import annotations

import json

import models_cache
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.dataset import write_dataset
from serving.cli import app
from training.forecast.config import ForecastConfig
from training.forecast.outlook import outlook
from training.forecast.track_record import ForecastRecorder, dataset_fingerprint, store_forecast
from training.store.connection import STORE_URL_ENV, open_store
from training.store.forecasts import forecasts

ORIGINS = [f"2023-{m:02d}-10" for m in (11, 12)] + [f"2024-{m:02d}-10" for m in range(1, 11)]  # 12 months
PERIODS = 3
FAST = ForecastConfig(n_sims=200, seed=0)
UNREACHABLE = "postgresql+psycopg://leadscore@127.0.0.1:1/leadscore"  # nothing listens on port 1


@pytest.fixture(scope="module")
def outlooks():
    data, _truth = models_cache.small_data()
    predictor = models_cache.small_predictor()
    return [outlook(predictor, data, origin, PERIODS, "month", config=FAST) for origin in ORIGINS]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.e2e)])
def stored(request, tmp_path, outlooks, monkeypatch):
    """A store (SQLite file, or a database on the test PostgreSQL server) holding the 12
    forecasts; LEADSCORE_STORE_URL points at it."""
    url = f"sqlite:///{tmp_path / 'store.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    monkeypatch.setenv(STORE_URL_ENV, url)
    store = open_store(url)
    fingerprint = dataset_fingerprint(models_cache.small_data()[0])
    for result in outlooks:
        assert store_forecast(store, result, "leadscore", 1, fingerprint) == PERIODS
    yield store
    store.close()


def _booked_by_month(data) -> pd.Series:
    """By hand: every won deal books its amount, an unknown amount the median won amount."""
    deals = data.deals
    won = deals[deals["outcome"] == "won"]
    value = won["amount"].fillna(won["amount"].median())
    return value.groupby(won["closed_at"].dt.to_period("M").dt.start_time).sum()


def _expected_by_horizon(rows: pd.DataFrame, booked: pd.Series) -> dict[int, dict]:
    """By hand from the stored rows: one forecast per period and horizon here (one per origin)."""
    rows = rows.assign(horizon=(rows["period_start"].dt.month - rows["as_of"].dt.month) % 12,
                       booked=rows["period_start"].map(booked))
    out = {}
    for horizon, h in rows.groupby("horizon"):
        landing = h["closed_so_far"] + h["p50"]
        error = landing - h["booked"]
        pct = error.abs() / h["booked"]
        out[int(horizon)] = {"periods": len(h), "wape": error.abs().sum() / h["booked"].sum(),
                             "bias": error.sum() / h["booked"].sum(), "within_5pct": (pct <= 0.05).mean(),
                             "within_15pct": (pct <= 0.15).mean(),
                             "p10_p90_hit_rate": ((h["closed_so_far"] + h["p10"] <= h["booked"])
                                                  & (h["booked"] <= h["closed_so_far"] + h["p90"])).mean()}
    return out


def test_forecast_accuracy_of_12_stored_origins_matches_a_hand_count(tmp_path, stored, local_mlflow_uri):
    import mlflow

    data, _truth = models_cache.small_data()
    folder = write_dataset(data, tmp_path / "data")
    rows = forecasts(stored, freq="month")
    assert len(rows) == len(ORIGINS) * PERIODS
    assert rows["data_fingerprint"].nunique() == 1 and set(rows["model_version"]) == {"1"}
    first = rows["period_start"] == rows["as_of"].dt.to_period("M").dt.start_time
    assert (rows.loc[first, "closed_so_far"] > 0).all() and (rows.loc[~first, "closed_so_far"] == 0).all()
    np.testing.assert_allclose(rows["landing_p50"], rows["closed_so_far"] + rows["p50"])

    out = CliRunner().invoke(app, ["forecast-accuracy", "--data", str(folder), "--out", str(tmp_path / "acc.json")])
    assert out.exit_code == 0, out.output
    report = json.loads((tmp_path / "acc.json").read_text())
    expected = _expected_by_horizon(rows, _booked_by_month(data))
    got = {row["horizon"]: row for row in report["by_horizon"]}
    assert sorted(got) == [0, 1, 2] and {row["group_value"] for row in report["by_horizon"]} == {"(all)"}
    for horizon, figures in expected.items():
        assert got[horizon]["periods"] == figures["periods"] == len(ORIGINS)
        for key, value in figures.items():
            assert got[horizon][key] == pytest.approx(value, rel=1e-9), (horizon, key)

    run = mlflow.search_runs(experiment_names=["leadscore-forecast"], filter_string=f"run_id = '{report['run_id']}'")
    assert run[["metrics._all_.h0.wape", "metrics._all_.h2.p10_p90_hit_rate"]].iloc[0].tolist() == pytest.approx(
        [expected[0]["wape"], expected[2]["p10_p90_hit_rate"]])
    page = CliRunner().invoke(app, ["forecast-accuracy", "--data", str(folder), "--no-log",
                                    "--out", str(tmp_path / "acc.html")])
    assert page.exit_code == 0, page.output
    assert "By horizon" in (tmp_path / "acc.html").read_text()


def test_a_store_outage_does_not_fail_storing_a_forecast(outlooks):
    import copy

    result = copy.deepcopy(outlooks[0])
    recorder = ForecastRecorder(url=UNREACHABLE)
    note = recorder.record(result, "leadscore", 1, models_cache.small_data()[0])
    assert note is not None and note.startswith("this forecast was not stored in the track record")
    assert result.forecast.notes[-1] == note and recorder.failures == 1
    recorder.record(result, "leadscore", 1, models_cache.small_data()[0])
    assert recorder.failures == 2


def test_the_recorder_stores_a_forecast_once_the_store_answers(tmp_path, outlooks):
    recorder = ForecastRecorder(url=f"sqlite:///{tmp_path / 'store.db'}")
    assert recorder.record(outlooks[0], "leadscore", 3, models_cache.small_data()[0]) is None
    rows = forecasts(open_store(f"sqlite:///{tmp_path / 'store.db'}"))
    assert len(rows) == PERIODS and recorder.failures == 0 and set(rows["model_version"]) == {"3"}

"""CLI -> MLflow server -> BentoML over HTTP: every endpoint, checked against the CLI
(`leadscore score`) and the forecast and pipeline functions on the same data."""
from __future__ import annotations

import json

import httpx
import numpy as np
import pandas as pd
import pytest
from payloads import payload_records

from features.dataset import read_dataset

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
API_KEY = "e2e-key-" + "y" * 24
AS_OF = "2024-09-02T00:00:00"


@pytest.fixture(scope="module")
def http(e2e_service):
    with httpx.Client(base_url=e2e_service, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120) as c:
        yield c


def test_health_and_docs_are_open_and_api_is_not(e2e_service):
    for path in ("/healthz", "/readyz", "/livez", "/metrics", "/docs.json"):
        assert httpx.get(e2e_service + path, timeout=10).status_code == 200
    assert httpx.post(e2e_service + "/score", json={"deals": []}, timeout=10).status_code == 401


def test_score_matches_leadscore_score(http, trained, leadscore_cli, tmp_path):
    out = tmp_path / "scores.json"
    leadscore_cli("score", "--data", str(trained["data_dir"]), "--out", str(out), "--as-of", AS_OF,
                  env=trained["env"])
    cli_scores = pd.DataFrame(json.loads(out.read_text())).set_index("deal_id")
    deals = payload_records(read_dataset(trained["data_dir"]), AS_OF)
    assert len(deals) == len(cli_scores) > 0
    served = []
    for start in range(0, len(deals), 500):
        r = http.post("/score", json={"deals": deals[start:start + 500], "as_of": AS_OF})
        assert r.status_code == 200, r.text
        served += r.json()["deals"]
    got = pd.DataFrame(served).set_index("deal_id").loc[cli_scores.index]
    for col in ("close_probability", "p_close_within_30d", "p_close_within_90d", "close_days_p50"):
        np.testing.assert_allclose(got[col].to_numpy(float), cli_scores[col].to_numpy(float), rtol=1e-9, atol=1e-9)  # the CLI JSON keeps 10 decimals
    assert (got["score"].to_numpy() == cli_scores["score"].to_numpy()).all()
    assert (got["tier"].to_numpy() == cli_scores["tier"].to_numpy()).all()
    assert set(got["model_version"]) == {int(cli_scores["model_version"].iloc[0])}
    # the same reasons, in the same words, in /score and in the score file
    words = (lambda factors: [(f["feature"], f["sentence"]) for side in ("positive", "negative") for f in factors[side]])
    assert got["top_factors"].map(words).tolist() == cli_scores["top_factors"].map(words).tolist()
    assert cli_scores["score"].is_monotonic_decreasing and "log_close_days_p50" not in cli_scores


def test_forecast_matches_the_forecast_function(http, trained):
    from training.forecast.core import forecast
    from training.registry import load_predictor

    r = http.post("/forecast", json={"as_of": AS_OF, "periods": 2, "freq": "month", "group_by": "region"})
    assert r.status_code == 200, r.text
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", trained["env"]["MLFLOW_TRACKING_URI"])
        predictor, _version = load_predictor("leadscore")
    local = forecast(predictor, read_dataset(trained["data_dir"]), pd.Timestamp(AS_OF), periods=2, freq="month",
                     group_by="region").table
    served = pd.DataFrame(r.json()["forecast"])
    assert len(served) == len(local)
    for col in ("expected", "p10", "p50", "p90"):
        np.testing.assert_allclose(served[col].to_numpy(float), local[col].to_numpy(float), rtol=1e-9)
    assert isinstance(r.json()["risk"], list)


def test_pipeline_matches_the_analytics(http, trained):
    from features.analytics import pipeline_metrics
    from serving.times import mark_utc

    r = http.post("/pipeline", json={"as_of": AS_OF, "group_by": "team"})
    assert r.status_code == 200, r.text
    local = pipeline_metrics(read_dataset(trained["data_dir"]), pd.Timestamp(AS_OF), group_by="team")
    answer = r.json()
    assert answer.pop("data")["data_end"] == "2025-01-01T00:00:00Z"  # which data the answer used
    assert answer["as_of"] == AS_OF + "Z"  # a UTC time says so
    assert answer == mark_utc(json.loads(json.dumps(local)))


def test_bad_input_is_a_4xx(http, trained):
    deal = payload_records(read_dataset(trained["data_dir"]), AS_OF)[0]
    r = http.post("/score", json={"deals": [dict(deal, amount=-3)], "as_of": AS_OF})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "deals[0].amount"

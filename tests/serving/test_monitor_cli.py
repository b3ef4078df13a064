"""`leadscore score` logs its scores; `leadscore monitor` reads them against the outcomes:
JSON and HTML, the exit status of the verdict, the MLflow run under the model version."""
from __future__ import annotations

import json

import mlflow
import models_cache
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.dataset import write_dataset
from serving.cli import app
from training.run import log_run
from training.store.connection import STORE_URL_ENV, open_store
from training.store.scores import scores

AS_OFS = ["2024-03-04", "2024-04-01", "2024-05-06", "2024-06-03", "2024-07-01", "2024-07-29"]


@pytest.fixture
def scored_log(tmp_path, local_mlflow_uri, monkeypatch):
    """The small model registered as champion, and `leadscore score` run at six dates."""
    monkeypatch.setenv(STORE_URL_ENV, f"sqlite:///{tmp_path / 'store.db'}")
    data, _ = models_cache.small_data()
    folder = tmp_path / "data"
    write_dataset(data, folder)
    version = log_run(models_cache.small_train_result(), data, "monitor-cli", "leadscore", folder)["model_version"]
    runner = CliRunner()
    for as_of in AS_OFS:
        result = runner.invoke(app, ["score", "--data", str(folder), "--out", str(tmp_path / "s.csv"),
                                     "--as-of", as_of, "--no-explain"])
        assert result.exit_code == 0, result.output
        assert "scores logged" in " ".join(result.output.split())  # rich wraps long lines
    return folder, version


def test_monitor_reports_the_logged_scores(scored_log, tmp_path):
    folder, version = scored_log
    store = open_store()
    logged = scores(store)
    store.close()
    assert set(logged["as_of"].dt.strftime("%Y-%m-%d")) == set(AS_OFS)
    assert (logged["model_version"] == str(version)).all() and logged["top_factors"].map(len).eq(0).all()
    scored = pd.read_csv(tmp_path / "s.csv")  # the last score file's trends, in words for a CRM import
    trends = scored["trend"].dropna()
    assert len(trends) > 0 and set(trends) <= {"improving", "steady", "declining"}
    assert scored["trend_factor"].isna().all()  # scored with --no-explain: no factors logged, none named
    result = CliRunner().invoke(app, ["monitor", "--data", str(folder), "--out", str(tmp_path / "m.json"),
                                      "--min-outcomes", "50"])
    report = json.loads((tmp_path / "m.json").read_text())
    assert result.exit_code == report["verdict"]["exit_status"] in (0, 1), result.output
    assert report["verdict"]["line"] in result.output
    perf = report["performance"][str(version)]
    assert perf["test_fold"]["brier"] > 0 and perf["realised"]["n"] > 50
    assert perf["realised"]["brier"] < 0.25 and perf["realised"]["auc"] > 0.6  # a real model on its own process
    assert report["drift"]["recent"] and "(score)" in {r["feature"] for r in report["drift"]["recent"]}
    run = mlflow.get_run(report["run_id"])
    assert run.data.tags["model_version"] == str(version) and "drift.(score)" in run.data.metrics or \
        any(k.startswith("drift.") for k in run.data.metrics)
    client = mlflow.MlflowClient()
    assert client.get_model_version("leadscore", str(version)).tags["leadscore.monitor.verdict"] == \
        report["verdict"]["line"]
    html = CliRunner().invoke(app, ["monitor", "--data", str(folder), "--out", str(tmp_path / "m.html"), "--no-log"])
    assert html.exit_code in (0, 1) and "<h2>Drift by week</h2>" in (tmp_path / "m.html").read_text()


def test_monitor_bad_options_are_one_line(tmp_path, local_mlflow_uri, monkeypatch):
    monkeypatch.setenv(STORE_URL_ENV, f"sqlite:///{tmp_path / 'store.db'}")
    bad = CliRunner().invoke(app, ["monitor", "--data", str(tmp_path), "--out", str(tmp_path / "m.xls")])
    assert bad.exit_code == 2 and "suffix" in bad.output
    data, _ = models_cache.small_data()
    write_dataset(data, tmp_path / "d")
    empty = CliRunner().invoke(app, ["monitor", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "m.json")])
    assert empty.exit_code == 2 and "no logged score" in empty.output
    inverted = CliRunner().invoke(app, ["monitor", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "m.json"),
                                        "--psi-warn", "0.5", "--psi-alert", "0.2"])
    assert inverted.exit_code == 2 and "above --psi-alert" in inverted.output

"""End-to-end training behaviour on real LightGBM and a real MLflow store: metrics JSON,
calibration sanity, consistency of time to close, no-signal fallback, cold start, and
the promotion gate on real predictors."""
from __future__ import annotations

import json

import mlflow
import models_cache
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.dataset import read_dataset, write_dataset
from features.synthetic import generate
from serving.cli import app
from training.pyfunc import unwrap
from training.run import train
from training.train import TrainConfig, fit_predictor


@pytest.fixture(scope="module")
def result():
    return models_cache.small_train_result()


def test_model_beats_stage_baseline_and_is_calibrated(result):
    cp = result.metrics["close_probability"]
    assert cp["auc"] > cp["baselines"]["stage_rate"]["auc"] + 0.03
    assert cp["brier_skill"] > 0.2
    assert cp["ece"] < 0.08  # 6k deals: the 100k benchmark measures 0.013
    assert set(cp["baselines"]) == {"stage_rate", "naive_bayes", "logistic"}
    assert {"by_stage", "by_segment"} <= set(cp)


def test_time_to_close_is_consistent_with_close_probability(result):
    data, _ = models_cache.small_data()
    scored = result.predictor.score(data, data.data_end - pd.Timedelta(days=60))
    p = scored["close_probability"].to_numpy()
    within = scored[["p_close_within_30d", "p_close_within_60d", "p_close_within_90d"]].to_numpy()
    assert (within <= p[:, None] + 1e-12).all()  # P(won by d) never exceeds P(won)
    assert (np.diff(within, axis=1) >= -1e-12).all()  # and grows with d
    q = scored[["close_days_p10", "close_days_p50", "close_days_p90"]].to_numpy()
    assert (np.diff(q, axis=1) >= 0).all()
    assert (scored["expected_close_date_p50"] >= scored["as_of"].dt.normalize()).all()
    tc = result.metrics["time_to_close"]
    assert 0.6 < tc["coverage_p10_p90"] < 0.95
    assert tc["concordance"] > 0.6


def test_no_signal_falls_back_to_the_most_recent_base_rate():
    data, _ = models_cache.small_data()
    rng = np.random.default_rng(0)
    deals = data.deals.copy()
    closed = deals["outcome"].notna().to_numpy()
    # coin flips, at 0.75 for the older closes and 0.55 for the last 300 days (the drift)
    recent = (deals["closed_at"] > data.data_end - pd.Timedelta(days=300)).to_numpy()
    flips = np.where(rng.random(len(deals)) < np.where(recent, 0.55, 0.75), "won", "lost")
    deals.loc[closed, "outcome"] = flips[closed]
    noise = type(data)(deals=deals, meta=data.meta, stage_events=data.stage_events, activities=None)
    # stage paths were generated with the true outcomes: keep only the first event so nothing predicts the label
    noise.stage_events = data.stage_events.groupby("deal_id", as_index=False).head(1)
    out = fit_predictor(noise, TrainConfig(close_params={"learning_rate": 0.1}, time_params={"learning_rate": 0.1}))
    cp = out.metrics["close_probability"]
    assert cp["fallback_to_base_rate"] and cp["brier_skill"] >= 0
    assert cp["base_rate"] > 0.7 and 0.5 < cp["fallback_rate"] < 0.6  # the calib fold's rate, not the train fold's
    assert abs(cp["fallback_rate"] - out.test["won"].mean()) < 0.05 and cp["ece"] < 0.05
    assert any("no signal" in m and "every tier is 'baseline'" in m for m in out.messages)
    assert set(out.predictor.score(noise, noise.data_end)["tier"]) == {"baseline"}


def test_cold_start_registers_the_stage_baseline(local_mlflow_uri, tmp_path):
    generate(tmp_path / "tiny", n_deals=700, seed=3)
    summary = train(read_dataset(tmp_path / "tiny"), experiment="cold")
    assert summary["model_kind"] == "stage_baseline"
    assert any("cold start" in m and "at least 200" in m for m in summary["messages"])
    predictor = unwrap(mlflow.pyfunc.load_model("models:/leadscore@champion"))
    assert predictor.kind == "stage_baseline"
    run = mlflow.get_run(summary["run_id"])
    assert run.data.params["model_kind"] == "stage_baseline"


def test_too_little_history_for_folds_is_a_cold_start_without_folds():
    data, _ = models_cache.small_data()
    short = data.deals[data.deals["created_at"] < data.deals["created_at"].min() + pd.Timedelta(days=60)]
    ids = set(short["deal_id"])
    tiny = type(data)(deals=short, meta=data.meta,
                      stage_events=data.stage_events[data.stage_events["deal_id"].isin(ids)])
    out = fit_predictor(tiny)
    assert out.predictor.kind == "stage_baseline" and out.folds is None
    assert out.metrics["fold_plan"]["n_folds"] == 0 and out.metrics["close_probability"]["in_sample"]
    assert any("cold start: too little history for time folds" in m for m in out.messages)


def test_train_cli_logs_a_run_and_the_gate_refuses_a_worse_model(local_mlflow_uri, tmp_path):
    data, truth = models_cache.small_data()
    folder = write_dataset(data, tmp_path / "data")
    (folder / "truth").mkdir()
    truth.to_parquet(folder / "truth" / "truth.parquet")
    metrics_file = tmp_path / "metrics.json"
    out = CliRunner().invoke(app, ["train", "--data", str(folder), "--metrics-out", str(metrics_file)])
    assert out.exit_code == 0, out.output
    m = json.loads(metrics_file.read_text())
    cp = m["close_probability"]
    for key in ("auc", "brier", "brier_skill", "ece", "log_loss"):
        assert isinstance(cp[key], float)
        for name in ("stage_rate", "naive_bayes", "logistic"):
            assert isinstance(cp["baselines"][name][key], float)
        assert isinstance(cp["oracle"][key], float)
    assert {"auc", "oracle_auc"} <= set(cp["at_creation"])
    assert {"mae_days", "coverage_p10_p90"} <= set(m["time_to_close"])
    assert m["alias"] == "champion"
    run = mlflow.get_run(m["run_id"])
    assert run.data.metrics["close_probability.auc"] == pytest.approx(cp["auc"])
    assert "data_sha256" in run.data.params
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(m["run_id"], "plots")}
    assert {"plots/reliability.png", "plots/roc.png", "plots/cumulative_gain.png",
            "plots/feature_importance.png", "plots/shap_summary.png"} <= artifacts

    # the registered model loads back by alias and gives the scores the run logged for its test fold
    champion = unwrap(mlflow.pyfunc.load_model("models:/leadscore@champion"))
    logged = pd.read_parquet(mlflow.artifacts.download_artifacts(
        run_id=m["run_id"], artifact_path="evaluation/test_predictions.parquet", dst_path=str(tmp_path / "a")))
    feats = champion.builder.transform_rows(data, logged[["deal_id", "as_of"]])
    again = logged[["deal_id", "as_of", "model"]].merge(
        champion.score_features(feats)[["deal_id", "as_of", "close_probability"]], on=["deal_id", "as_of"])
    assert len(again) == len(logged)
    assert np.array_equal(again["model"].to_numpy(), again["close_probability"].to_numpy())

    # a deliberately weak model on the same data and holdout is not promoted
    weak = train(data, truth, experiment="weak", config=TrainConfig(close_params={"n_estimators": 1}))
    assert weak["alias"] == "challenger"
    assert "worse than champion" in weak["gate_reason"] or "no skill" in weak["gate_reason"]
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias("leadscore", "champion").version) == str(m["model_version"])
    assert client.get_run(weak["run_id"]).data.tags["leadscore.gate"] == "challenger"

    # re-scoring the champion on data (a year before the end: outcomes known since)
    ev_file = tmp_path / "eval.json"
    out = CliRunner().invoke(app, ["evaluate", "--data", str(folder), "--metrics-out", str(ev_file)])
    assert out.exit_code == 0, out.output
    ev = json.loads(ev_file.read_text())
    assert ev["model_version"] == m["model_version"] and ev["n_with_outcome"] > 100
    assert ev["close_probability"]["auc"] > 0.7

    # by hand: the gate refused the weak one, so promoting it needs --force; then roll back
    assert CliRunner().invoke(app, ["promote", str(weak["model_version"])]).exit_code == 2
    assert CliRunner().invoke(app, ["promote", str(weak["model_version"]), "--force"]).exit_code == 0
    assert str(client.get_model_version_by_alias("leadscore", "champion").version) == str(weak["model_version"])
    assert CliRunner().invoke(app, ["rollback"]).exit_code == 0
    assert str(client.get_model_version_by_alias("leadscore", "champion").version) == str(m["model_version"])

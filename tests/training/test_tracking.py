"""Tracking, registry and the promotion gate against real MLflow stores (SQLite, and
one test through a real `mlflow server` process)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from registry_helpers import HOLDOUT_X, log_constant_model

from training import gate, registry, tracking
from training.evaluate import brier

HOLDOUT_Y = np.array([1, 0, 1, 1])


def score_version(model_name: str):
    """compare_fn: Brier of a registered version on the holdout."""
    import mlflow

    def score(version: int) -> gate.HoldoutScore:
        model = mlflow.pyfunc.load_model(f"models:/{model_name}/{version}")
        return gate.HoldoutScore(brier(HOLDOUT_Y, model.predict(HOLDOUT_X)))

    return score


def scored(value: float) -> gate.HoldoutScore:
    return gate.HoldoutScore(value)


@pytest.fixture(scope="module")
def store(tmp_path_factory, _migrated_mlflow_db):
    """One SQLite store with two logged runs: a good (0.7) and a bad (0.2) constant model.
    Tests register them under their own model names, so they stay independent."""
    import mlflow

    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    shutil.copyfile(_migrated_mlflow_db, db)
    uri = f"sqlite:///{db}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        good, bad = log_constant_model(0.7, "good"), log_constant_model(0.2, "bad")
        yield {"uri": uri, "good": good, "bad": bad}
        mlflow.set_tracking_uri(None)


def test_tracking_uri_default_is_embedded_and_lazy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example.invalid:5000")
    assert tracking.tracking_uri() == "http://example.invalid:5000"
    assert tracking.artifact_location("http://example.invalid:5000") is None
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert not (tmp_path / ".leadscore").exists()
    uri = tracking.tracking_uri()
    assert uri == f"sqlite:///{tmp_path / '.leadscore' / 'mlflow.db'}"
    assert (tmp_path / ".leadscore").is_dir()
    assert tracking.artifact_location(uri) == (tmp_path / ".leadscore" / "mlartifacts").as_uri()


def test_data_fingerprint():
    deals = pd.DataFrame({"deal_id": ["a", "b", "c"], "amount": [1.0, None, 3.0],
                          "created_at": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-05"])})
    events = pd.DataFrame({"deal_id": ["a"], "entered_at": pd.to_datetime(["2024-04-01"])})
    fp = tracking.data_fingerprint({"deals": deals, "stage_events": events, "activities": None})
    assert fp["rows_deals"] == 3 and fp["rows_stage_events"] == 1 and "rows_activities" not in fp
    assert fp["data_from"] == "2024-01-01T00:00:00" and fp["data_to"] == "2024-04-01T00:00:00"
    assert len(fp["data_sha256"]) == 64
    shuffled = deals.iloc[[2, 0, 1]][["amount", "deal_id", "created_at"]]
    assert tracking.data_fingerprint({"deals": shuffled, "stage_events": events})["data_sha256"] == fp["data_sha256"]
    changed = deals.assign(amount=[1.0, None, 3.5])
    assert tracking.data_fingerprint({"deals": changed, "stage_events": events})["data_sha256"] != fp["data_sha256"]


def test_flatten_metrics_keeps_numbers_only():
    nested = {"close_probability": {"auc": 0.8, "ece": None, "n": 10, "ok": True, "name": "x",
                                    "baselines": {"stage_rate": {"auc": float("nan"), "brier": 0.2}},
                                    "by_stage": {"Proposal/Price (quote)": {"auc": 0.7}}}}
    assert tracking.flatten_metrics(nested) == {
        "close_probability.auc": 0.8, "close_probability.n": 10.0,
        "close_probability.baselines.stage_rate.brier": 0.2,
        "close_probability.by_stage.Proposal_Price _quote_.auc": 0.7}


def test_run_logs_metrics_and_artifacts_next_to_the_database(local_mlflow_uri, tmp_path):
    from mlflow import MlflowClient

    metrics = {"close_probability": {"auc": 0.81, "ece": None, "baselines": {"logistic": {"auc": 0.7}},
                                     "by_stage": {"Negotiation/Review": {"auc": np.float64(0.6)}}}}
    with tracking.start_run("unit", run_name="metrics") as run:
        flat = tracking.log_metrics_nested(metrics)
    assert flat == {"close_probability.auc": 0.81, "close_probability.baselines.logistic.auc": 0.7,
                    "close_probability.by_stage.Negotiation_Review.auc": 0.6}
    logged = MlflowClient(local_mlflow_uri).get_run(run.info.run_id)
    assert logged.data.metrics == flat
    assert run.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())
    saved = json.loads(next((tmp_path / "mlartifacts").rglob("metrics.json")).read_text())
    assert saved == metrics
    with pytest.raises(RuntimeError, match="active run"):
        tracking.log_metrics_nested(metrics)


def test_loading_without_a_champion_is_a_clear_error(local_mlflow_uri):
    with pytest.raises(registry.NoChampion, match="no champion model registered.*run `leadscore train`"):
        registry.load_predictor("nothing-here")
    with pytest.raises(registry.RegistryError, match="no version of model 'nothing-here' holds the alias 'challenger'"):
        registry.load_predictor("nothing-here", alias="challenger")
    with pytest.raises(registry.RegistryError, match="no champion to roll back"):
        registry.rollback("nothing-here")


def test_gate_promotes_better_and_refuses_worse(store):
    import mlflow
    from mlflow import MlflowClient

    name, score = "gate", score_version("gate")
    holdout = {v: brier(HOLDOUT_Y, np.full(4, v)) for v in (0.7, 0.2)}
    first = gate.register_and_gate(store["bad"], "model", name, candidate=scored(holdout[0.2]),
                                   compare_fn=score)
    assert (first.version, first.alias, first.reason) == (1, "champion", "no champion yet")

    better = gate.register_and_gate(store["good"], "model", name, candidate=scored(holdout[0.7]),
                                    compare_fn=score)
    assert (better.version, better.alias, better.champion_version) == (2, "champion", 1)
    assert better.champion == pytest.approx(holdout[0.2])

    worse = gate.register_and_gate(store["bad"], "model", name, candidate=scored(holdout[0.2]),
                                   compare_fn=score)
    assert (worse.version, worse.alias, worse.champion_version) == (3, "challenger", 2)
    assert "worse than champion v2" in worse.reason
    assert worse.to_dict()["candidate"] == pytest.approx(holdout[0.2])

    client = MlflowClient(store["uri"])
    assert int(client.get_model_version_by_alias(name, "champion").version) == 2
    assert int(client.get_model_version_by_alias(name, "challenger").version) == 3
    assert client.get_model_version(name, "3").tags["leadscore.gate_reason"] == worse.reason
    assert client.get_run(store["bad"]).data.tags["leadscore.gate"] == "challenger"
    assert registry.champion_version(name) == 2
    np.testing.assert_allclose(mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(HOLDOUT_X), 0.7)
    with pytest.raises(registry.RegistryError, match="has no version 9 \\(versions: 1, 2, 3\\)"):
        registry.load_predictor(name, version=9)


def test_gate_without_or_with_broken_compare_fn(store):
    name = "gate-fallback"
    good, bad = brier(HOLDOUT_Y, np.full(4, 0.7)), brier(HOLDOUT_Y, np.full(4, 0.2))
    gate.register_and_gate(store["good"], "model", name, candidate=scored(good))
    # no compare_fn: the champion's score recorded at its registration is used, and said so
    recorded = gate.register_and_gate(store["bad"], "model", name, candidate=scored(bad))
    assert recorded.alias == "challenger" and recorded.champion == pytest.approx(good)
    assert "recorded at its own registration" in recorded.reason

    def broken(version: int) -> float:
        raise KeyError("feature 'days_in_stage' missing")

    refused = gate.register_and_gate(store["good"], "model", name, candidate=scored(good),
                                     compare_fn=broken)
    assert refused.alias == "challenger" and "cannot be scored" in refused.reason
    assert "leadscore promote" in refused.reason
    forced = gate.register_and_gate(store["good"], "model", name, candidate=scored(good),
                                    compare_fn=lambda v: None, promote_if_incomparable=True)
    assert forced.alias == "champion" and "not comparable" in forced.reason
    strict = gate.register_and_gate(store["good"], "model", name, candidate=scored(0.195),
                                    compare_fn=lambda v: scored(0.19))
    tolerant = gate.register_and_gate(store["good"], "model", name, candidate=scored(0.195),
                                      compare_fn=lambda v: scored(0.19), tolerance=0.01)
    assert (strict.alias, tolerant.alias) == ("challenger", "champion")


def test_promote_and_rollback_move_the_alias(store):
    name = "history"
    for run in ("good", "bad", "good"):
        gate.register_and_gate(store[run], "model", name, candidate=scored(0.5),
                               compare_fn=lambda v: scored(0.5))  # ties are "not worse": v1, v2, v3
    assert registry.champion_version(name) == 3
    assert registry.rollback(name) == 2
    assert registry.rollback(name) == 1
    with pytest.raises(registry.RegistryError, match="no earlier champion than v1"):
        registry.rollback(name)
    assert registry.promote(name, 3) == 3
    assert registry.rollback(name) == 1
    with pytest.raises(registry.RegistryError, match="has no version 99 \\(versions: 1, 2, 3\\)"):
        registry.promote(name, 99)
    assert registry.champion_version(name) == 1


@pytest.mark.e2e
def test_run_on_a_real_server_loads_back_by_alias(mlflow_server, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    try:
        run_id = log_constant_model(0.3, "served")
        decision = gate.register_and_gate(run_id, "model", "served", candidate=scored(0.2))
        assert decision.alias == "champion"
        assert mlflow.get_run(run_id).info.artifact_uri.startswith("mlflow-artifacts:")
        assert registry.champion_version("served") == decision.version
        by_alias = mlflow.pyfunc.load_model("models:/served@champion")
        np.testing.assert_allclose(by_alias.predict(HOLDOUT_X), 0.3)
    finally:
        mlflow.set_tracking_uri(None)

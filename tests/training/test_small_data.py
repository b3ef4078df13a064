"""Small, short and odd exports train without crashing and say what they did: same-day
closes, a 10-deal export (cold start without folds), a 14-month export with fewer folds
(`--gap-days`), the leakage guard on a planted leak and its `--keep-column` override, and
the "baseline" tier of a model that ranks nothing. Small data, so most runs are cold starts."""
from __future__ import annotations

import json
from dataclasses import replace

import mlflow
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.dataset import write_dataset
from features.schema import CanonicalData, DatasetMeta
from features.synthetic import generate_data
from serving.cli import app
from training.folds import THREE_FOLDS
from training.predictor import Tiers
from training.pyfunc import unwrap
from training.run import add_truth_metrics
from training.train import TrainConfig, fit_predictor

# `leadscore train` through the CLI: a cold start, but a whole MLflow run and registration each
CLI_TRAINING = pytest.mark.slow(reason="trains with the CLI into an MLflow store")


def test_a_constant_model_gets_the_baseline_tier_for_every_deal():
    p = np.array([0.9, 0.3, 0.05])
    assert Tiers().assign(p).tolist() == ["hot", "warm", "cold"]
    assert Tiers(constant=True).assign(p).tolist() == ["baseline"] * 3


def with_same_day_closes(data, n: int = 40):
    """Closed deals created late in the history (the test window) made to close at their
    creation: half at the very same timestamp, half three hours later; their events after
    the first are dropped (they never left the first stage)."""
    deals = data.deals.copy()
    recent = deals["created_at"] >= data.data_end - pd.Timedelta(days=120)
    late = deals.index[deals["outcome"].notna() & recent][:n]
    deals.loc[late[: n // 2], "closed_at"] = deals.loc[late[: n // 2], "created_at"]
    deals.loc[late[n // 2:], "closed_at"] = deals.loc[late[n // 2:], "created_at"] + pd.Timedelta(hours=3)
    ids = set(deals.loc[late, "deal_id"])
    events = data.stage_events
    first = events.groupby("deal_id").cumcount() == 0
    return replace(data, deals=deals, stage_events=events[~events["deal_id"].isin(ids) | first]), ids


def test_same_day_closes_train_and_evaluate():
    data, truth = generate_data(1500, seed=2)
    odd, ids = with_same_day_closes(data)
    result = fit_predictor(odd)
    add_truth_metrics(result, odd, truth)  # creation-time snapshots: no deal asked for when it was not open
    at_creation = result.metrics["close_probability"]["at_creation"]
    assert at_creation["n"] > 0
    same_instant = odd.deals[odd.deals["closed_at"] == odd.deals["created_at"]]
    assert len(same_instant) == 20 and not set(same_instant["deal_id"]) & set(result.test["deal_id"])
    # a deal closed three hours after creation is open for three hours, on no Monday midnight
    assert not ids & set(result.test["deal_id"])


def test_same_day_closes_count_in_the_pipeline_metrics():
    from features.analytics import pipeline_metrics

    data, _truth = generate_data(1500, seed=2)
    odd, ids = with_same_day_closes(data)
    funnel = pipeline_metrics(odd, odd.data_end)["total"]["funnel"]
    closed = odd.deals["outcome"]
    assert (funnel["won"], funnel["lost"]) == ((closed == "won").sum(), (closed == "lost").sum())
    same = odd.deals.loc[odd.deals["deal_id"].isin(ids)]
    lost_in_lead = next(r for r in funnel["losses_by_stage"] if r["stage"] == odd.meta.stages[0])["lost"]
    assert lost_in_lead >= (same["outcome"] == "lost").sum()  # a zero-length stay still ends in a loss there


def tiny_export(tmp_path, n: int = 10):
    data, _truth = generate_data(n, seed=1, months=2)
    return data, write_dataset(data, tmp_path / "tiny")


@CLI_TRAINING
def test_a_ten_deal_export_trains_as_a_cold_start_and_says_so(local_mlflow_uri, tmp_path):
    data, folder = tiny_export(tmp_path)
    metrics_file = tmp_path / "m.json"
    out = CliRunner().invoke(app, ["train", "--data", str(folder), "--metrics-out", str(metrics_file)])
    assert out.exit_code == 0, out.output
    assert "cold start: too little history for time folds" in out.output
    assert "as-of date between" not in out.output
    m = json.loads(metrics_file.read_text())
    assert m["model_kind"] == "stage_baseline" and m["fold_plan"]["n_folds"] == 0
    assert m["close_probability"]["in_sample"] is True
    predictor = unwrap(mlflow.pyfunc.load_model("models:/leadscore@champion"))
    scored = predictor.score(data, data.data_end)
    assert len(scored) and set(scored["tier"]) == {"baseline"}


@CLI_TRAINING
def test_a_fourteen_month_export_gets_fewer_folds_and_says_so(local_mlflow_uri, tmp_path):
    data, _truth = generate_data(1500, seed=4, months=14)
    folder = write_dataset(data, tmp_path / "short")
    metrics_file = tmp_path / "m.json"
    out = CliRunner().invoke(app, ["train", "--data", str(folder), "--gap-days", "90", "--snapshot-freq", "W-MON",
                                   "--metrics-out", str(metrics_file)])
    assert out.exit_code == 0, out.output
    m = json.loads(metrics_file.read_text())
    assert m["fold_plan"]["n_folds"] == 3 and m["fold_plan"]["gap_days"] == 90
    assert list(m["folds"]) == list(THREE_FOLDS)
    assert "too short for four time folds with 90-day gaps" in m["fold_plan"]["notes"][0]
    assert "three folds" in " ".join(out.output.split())
    assert mlflow.get_run(m["run_id"]).data.metrics["fold_plan.n_folds"] == 3


def planted_leak(n: int = 1500):
    """Generated deals whose amount is 0 for every lost deal (as in the issue)."""
    data, _truth = generate_data(n, seed=5)
    deals = data.deals.copy()
    deals.loc[deals["outcome"] == "lost", "amount"] = 0.0
    return replace(data, deals=deals)


def test_a_planted_leak_is_left_out_named_and_kept_on_request():
    data = planted_leak()
    result = fit_predictor(data)
    leakage = result.metrics["leakage"]
    assert list(leakage["excluded"]) == ["amount"] and leakage["excluded"]["amount"]["auc"] == pytest.approx(1.0)
    assert not {"amount", "log_amount"} & set(result.predictor.feature_names)
    assert any("'amount' (AUC 1.0000" in m and "left out of the model" in m for m in result.messages)
    kept = fit_predictor(data, TrainConfig(keep_columns=("amount",)))
    assert list(kept.metrics["leakage"]["kept"]) == ["amount"] and not kept.metrics["leakage"]["excluded"]
    assert {"amount", "log_amount"} <= set(kept.predictor.feature_names)


@CLI_TRAINING
def test_the_leak_reaches_mlflow_and_keep_column_overrides_it(local_mlflow_uri, tmp_path):
    folder = write_dataset(planted_leak(), tmp_path / "leaky")
    out = CliRunner().invoke(app, ["train", "--data", str(folder), "--metrics-out", str(tmp_path / "a.json")])
    assert out.exit_code == 0, out.output
    assert "leakage guard: 'amount'" in " ".join(out.output.split())
    run = mlflow.get_run(json.loads((tmp_path / "a.json").read_text())["run_id"])
    assert run.data.params["excluded_columns"] == "amount"
    assert run.data.tags["leadscore.excluded_columns"] == "amount"
    assert run.data.metrics["leakage.excluded.amount.auc"] == pytest.approx(1.0)
    out = CliRunner().invoke(app, ["train", "--data", str(folder), "--keep-column", "amount",
                                   "--metrics-out", str(tmp_path / "b.json")])
    assert out.exit_code == 0, out.output
    run = mlflow.get_run(json.loads((tmp_path / "b.json").read_text())["run_id"])
    assert run.data.params["excluded_columns"] == "-"
    assert run.data.tags["leadscore.kept_suspected_leaks"] == "amount"


def test_the_service_schema_accepts_the_baseline_tier():
    from serving.schemas import ScoredDeal

    deal = ScoredDeal(deal_id="d", close_probability=0.3, score=30, tier="baseline", model_version=1)
    assert deal.tier == "baseline"


# ---- backtest on small, short and odd exports: each origin trains what it allows

@pytest.mark.slow(reason="backtests through the CLI: a cold-start training and a forecast per origin")
def test_a_ten_deal_export_backtests_as_cold_starts_without_crashing(tmp_path):
    data, _truth = generate_data(10, seed=1, months=8)
    folder = write_dataset(data, tmp_path / "tiny")
    out = tmp_path / "bt.json"
    result = CliRunner().invoke(app, ["backtest", "--data", str(folder), "--freq", "month", "--origins", "3",
                                      "--out", str(out), "--no-log", "--sims", "100"])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 3 and all(r["model_cold_start"] for r in rows)
    assert all(r["model_kind"] in (None, "stage_baseline") for r in rows)
    assert all(r["model_kind"] is not None or r["model_note"] for r in rows)  # no model: it says why
    assert "cold start" in result.output


@CLI_TRAINING
def test_a_fourteen_month_export_backtests_over_six_monthly_origins(tmp_path):
    data, _truth = generate_data(1500, seed=4, months=14)
    folder = write_dataset(data, tmp_path / "short")
    out = tmp_path / "bt.json"
    result = CliRunner().invoke(app, ["backtest", "--data", str(folder), "--freq", "month", "--origins", "6",
                                      "--gap-days", "30", "--snapshot-freq", "W-MON", "--out", str(out),
                                      "--no-log", "--sims", "200"])
    assert result.exit_code == 0, result.output
    bt = json.loads(out.read_text())
    assert len(bt["rows"]) == 6 and bt["train_config"] == {"gap_days": 30, "snapshot_freq": "W-MON"}
    assert bt["summary"]["model"]["origins"] == 6  # every origin has a model forecast
    messages = " ".join(m for r in bt["rows"] for m in r["model_messages"])
    assert all(r["model_kind"] for r in bt["rows"])
    assert "fold" in messages or all(not r["model_cold_start"] for r in bt["rows"])


@pytest.mark.slow(reason="trains a predictor inside the backtest")
def test_same_day_closes_go_through_the_backtest():
    from training.forecast.backtest import backtest
    from training.forecast.config import ForecastConfig

    data, _truth = generate_data(1500, seed=2)
    odd, _ids = with_same_day_closes(data)
    bt = backtest(odd, "month", 2, train_config=TrainConfig(gap_days=30), config=ForecastConfig(n_sims=100))
    assert len(bt["rows"]) == 2 and bt["summary"]["model"]["origins"] == 2


@pytest.mark.parametrize("command", [["backtest", "--origins", "2", "--out", "{tmp}/bt.json", "--no-log"],
                                     ["forecast-accuracy", "--out", "{tmp}/fa.json"]])
def test_a_static_export_refuses_what_needs_dates_in_one_line(tmp_path, command):
    """A static lead export (X Education's kind) has no data end: one line, not `max() arg is an empty sequence`."""
    meta = DatasetMeta(stages=["lead"], attributes={"origin": "categorical"}, static=True, name="leads")
    deals = pd.DataFrame({"deal_id": ["a", "b"], "created_at": pd.to_datetime([None, None]),
                          "closed_at": pd.to_datetime([None, None]), "outcome": ["won", "lost"], "origin": ["x", "y"]})
    folder = write_dataset(CanonicalData(deals=deals, meta=meta), tmp_path / "leads")
    out = CliRunner().invoke(app, [*(a.format(tmp=tmp_path) for a in command), "--data", str(folder)])
    assert out.exit_code == 2
    assert " ".join(out.output.split()).endswith(
        "error: dataset 'leads' is a static lead export: no data end, so nothing that needs a date (as-of, forecast, "
        "backtest) can run on it; `leadscore train` and `score` can")

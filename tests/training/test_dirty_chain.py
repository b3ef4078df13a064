"""The whole chain on a small dirty export (`generate --export` -> ingest -> train -> score
-> pipeline -> forecast -> backtest): the leaky column is named and left out, and stale
deals are flagged in the score file, the pipeline metrics and the forecast's own line."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from serving.cli import app


def run(*args: str) -> str:
    out = CliRunner().invoke(app, list(args))
    assert out.exit_code == 0, out.output
    return " ".join(out.output.split())


@pytest.mark.slow(reason="the whole CLI chain on a dirty export, MLflow included")
def test_dirty_export_chain_flags_stale_deals_and_leaves_the_leak_out(local_mlflow_uri, tmp_path):
    export, data = tmp_path / "export", tmp_path / "data"
    run("generate", "--deals", "600", "--seed", "3", "--export", str(export), "--zombie-share", "0.9")
    run("ingest", "--mapping", str(export / "mapping.yaml"), "--out", str(data))
    said = run("train", "--data", str(data), "--metrics-out", str(tmp_path / "m.json"))
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert "signed_value" in said and "signed_value" in metrics["leakage"]["excluded"]
    rule = metrics["staleness"]
    assert 0 < rule["give_up_age_days"] < rule["max_won_age_days"]  # zombies: open deals stop winning early
    assert rule["age_shift"]["log_odds_shift"]  # the served P(won) takes its level by age from the curve
    run("score", "--data", str(data), "--out", str(tmp_path / "s.csv"))
    scores = pd.read_csv(tmp_path / "s.csv")
    stale = scores[scores["stale"]]
    assert len(stale) > len(scores) / 2  # 90 % of the open pipeline is zombies
    reasons = stale["stale_reason"]
    older = reasons.str.fullmatch(r"open \d+ days; no won deal took longer than \d+ days")
    given_up = reasons.str.fullmatch(r"open \d+ days; fewer than 2% of the deals still open at \d+ days went on to win")
    assert (older | given_up).all() and older.any() and given_up.any()
    assert scores.loc[~scores["stale"], "stale_reason"].isna().all()
    run("pipeline", "--data", str(data), "--out", str(tmp_path / "p.json"))
    pipe = json.loads((tmp_path / "p.json").read_text())["total"]
    assert pipe["stale"]["count"] == len(stale) and pipe["coverage"]["includes_stale_deals"]
    said = run("forecast", "--data", str(data), "--periods", "2", "--sims", "200", "--no-log",
               "--out", str(tmp_path / "f.json"))
    line = json.loads((tmp_path / "f.json").read_text())["stale_pipeline"]
    assert line["stale_open_count"] == len(stale) and line["stale_open_value"] > 0
    assert f"stale pipeline: {len(stale):,} of" in said
    run("backtest", "--data", str(data), "--origins", "1", "--sims", "100", "--no-log", "--gap-days", "30",
        "--out", str(tmp_path / "b.json"))
    (row,) = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert row.get("model_note") is None and row["stale_open_count"] > 0 and row["model"] > 0

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
    assert metrics["staleness"]["max_won_age_days"] > 0
    run("score", "--data", str(data), "--out", str(tmp_path / "s.csv"))
    scores = pd.read_csv(tmp_path / "s.csv")
    stale = scores[scores["stale"]]
    assert len(stale) > len(scores) / 2  # 90 % of the open pipeline is zombies
    assert stale["stale_reason"].str.fullmatch(r"open \d+ days; no won deal took longer than \d+ days").all()
    assert scores.loc[~scores["stale"], "stale_reason"].isna().all()
    run("pipeline", "--data", str(data), "--out", str(tmp_path / "p.json"))
    pipe = json.loads((tmp_path / "p.json").read_text())["total"]
    assert pipe["stale"]["count"] == len(stale) and pipe["coverage"]["includes_stale_deals"]
    said = run("forecast", "--data", str(data), "--periods", "2", "--sims", "200", "--no-log",
               "--out", str(tmp_path / "f.json"))
    line = json.loads((tmp_path / "f.json").read_text())["stale_pipeline"]
    assert line["stale_open_count"] == len(stale) and line["stale_open_value"] > 0
    assert f"stale pipeline: {len(stale):,} of" in said
    run("backtest", "--data", str(data), "--origins", "2", "--sims", "100", "--no-log", "--gap-days", "30",
        "--out", str(tmp_path / "b.json"))
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert all(r["stale_open_count"] > 0 for r in rows if r.get("model_note") is None)

"""The `leadscore` commands: each reads --data, calls a package function and writes --out
by its suffix; every user error is one line and exit code 2. (Commands that need a
trained model are exercised in tests/training/test_train.py.)"""
from __future__ import annotations

import csv
import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from features.synthetic import generate
from serving.cli import app
from serving.cli.output import write_output

AS_OF = "2023-10-01"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli") / "data"
    generate(folder, n_deals=600, seed=5, months=12)
    return folder


def invoke(*args) -> str:
    out = CliRunner().invoke(app, [str(a) for a in args])
    assert out.exit_code == 0, out.output
    return out.output


def test_cli_errors_are_one_line(tmp_path, local_mlflow_uri):
    for args in (["train", "--data", str(tmp_path / "nowhere")], ["score", "--data", str(tmp_path), "--out", "x.xls"],
                 ["promote", "7"], ["evaluate", "--data", str(tmp_path)],
                 ["features", "--data", str(tmp_path), "--as-of", "yesterday", "--out", "f.parquet"],
                 ["pipeline", "--data", str(tmp_path), "--out", "out.xlsx"]):
        out = CliRunner().invoke(app, args)
        assert out.exit_code == 2, (args, out.output)
        assert "Traceback" not in out.output and out.output.strip().count("\n") <= 3, out.output


def test_pipeline_writes_json_csv_and_html(data_dir, tmp_path):
    invoke("pipeline", "--data", data_dir, "--as-of", AS_OF, "--group-by", "team", "--out", tmp_path / "out.json")
    metrics = json.loads((tmp_path / "out.json").read_text())
    assert metrics["as_of"].startswith(AS_OF) and {g["group"] for g in metrics["groups"]}
    invoke("pipeline", "--data", data_dir, "--as-of", AS_OF, "--group-by", "team", "--out", tmp_path / "out.csv")
    with (tmp_path / "out.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["metric", "group", "stage", "value"]
    reached = {r["stage"]: r["value"] for r in rows if r["metric"] == "funnel.stages.reached" and r["group"] == "(total)"}
    assert reached == {s["stage"]: str(s["reached"]) for s in metrics["total"]["funnel"]["stages"]}
    invoke("pipeline", "--data", data_dir, "--out", tmp_path / "sub" / "report.html")
    assert (tmp_path / "sub" / "report.html").read_text().startswith("<!DOCTYPE html>")


def test_an_unknown_suffix_is_refused_before_any_work(tmp_path):
    out = CliRunner().invoke(app, ["pipeline", "--data", str(tmp_path / "nowhere"), "--out", "out.xlsx"])
    assert out.exit_code == 2 and ".json, .csv, .html" in out.output


def test_features_writes_feature_rows_and_labels(data_dir, tmp_path):
    invoke("features", "--data", data_dir, "--as-of", "2023-08-01,2023-10-01", "--out", tmp_path / "f.parquet")
    back = pd.read_parquet(tmp_path / "f.parquet")
    assert len(back) > 0 and {"owner_win_rate", "won", "won_within_90d"} <= set(back.columns)
    assert set(back["as_of"]) == {pd.Timestamp("2023-08-01"), pd.Timestamp("2023-10-01")}


def test_write_output_by_suffix(tmp_path):
    frame = pd.DataFrame({"deal_id": ["a", "b"], "at": pd.to_datetime(["2024-01-01", "2024-01-02"]),
                          "top_factors": [[{"feature": "x", "impact": 0.1}], []]})
    write_output(frame, tmp_path / "s.csv")
    assert pd.read_csv(tmp_path / "s.csv")["top_factors"].map(json.loads).tolist() == frame["top_factors"].tolist()
    write_output(frame, tmp_path / "s.parquet")
    assert pd.read_parquet(tmp_path / "s.parquet")["top_factors"].iloc[0] == '[{"feature": "x", "impact": 0.1}]'
    write_output(frame, tmp_path / "s.json")
    assert json.loads((tmp_path / "s.json").read_text())[0]["top_factors"] == [{"feature": "x", "impact": 0.1}]
    write_output({"auc": 0.8, "at": pd.Timestamp("2024-01-01")}, tmp_path / "m" / "metrics.json")
    assert json.loads((tmp_path / "m" / "metrics.json").read_text()) == {"auc": 0.8, "at": "2024-01-01 00:00:00"}

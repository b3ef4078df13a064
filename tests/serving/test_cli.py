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


def test_version_matches_pyproject():
    import tomllib
    from pathlib import Path

    version = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]["version"]
    assert invoke("--version").strip() == f"leadscore {version}"


def test_license_file_matches_pyproject():
    import tomllib
    from pathlib import Path

    root = Path(__file__).parents[2]
    assert tomllib.loads((root / "pyproject.toml").read_text())["project"]["license"] == "Apache-2.0"
    text = (root / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text


def test_the_readme_links_nothing_outside_the_repository():
    """First contact: every link of the README is a file of the repository (the design it
    follows is docs/DESIGN.md), and every web address in it is the service or the MLflow UI
    on loopback."""
    import re
    from pathlib import Path

    root = Path(__file__).parents[2]
    text = (root / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    assert "docs/DESIGN.md" in targets
    for target in targets:
        assert "://" not in target and (root / target.split("#")[0]).exists(), target
    urls = re.findall(r"https?://[^\s`)'\"]+", text)
    assert urls and all(re.match(r"https?://(127\.0\.0\.1|localhost)[:/]", url) for url in urls), urls


def test_every_command_help_ends_with_an_example():
    from serving.cli import EXAMPLES

    names = {c.name or c.callback.__name__ for c in app.registered_commands}
    assert names == set(EXAMPLES)
    for name in names:
        command = name.replace("_", "-")  # typer's command name for a function name
        assert f"Example: leadscore {command}" in invoke(command, "--help").replace("LEADSCORE_DATA=data/demo ", "")


@pytest.fixture
def busy_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_busy_port_is_one_line_and_exit_2(busy_port, monkeypatch):
    monkeypatch.delenv("LEADSCORE_DATA", raising=False)
    out = CliRunner().invoke(app, ["serve", "--port", str(busy_port)])
    assert out.exit_code == 2, out.output
    assert out.output.strip().count("\n") == 0 and "already in use" in out.output and "PORT=" in out.output


def test_an_unreadable_data_folder_is_one_line_and_exit_2(tmp_path, monkeypatch):
    import socket

    from serving.server import startup_problem

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free_port = sock.getsockname()[1]
    monkeypatch.setenv("LEADSCORE_DATA", str(tmp_path / "nowhere"))
    out = CliRunner().invoke(app, ["serve", "--port", str(free_port)])
    assert out.exit_code == 2 and "LEADSCORE_DATA=" in out.output and out.output.strip().count("\n") == 0
    assert "meta.json" in startup_problem(0, "127.0.0.1", {"LEADSCORE_DATA": str(tmp_path)})
    assert startup_problem(0, "127.0.0.1", {}) is None


def test_the_makefile_check_is_the_same_check(busy_port, capsys):
    from serving.server import main

    assert main(["--port", str(busy_port)]) == 2
    assert "already in use" in capsys.readouterr().err
    assert main(["--port", "0"]) == 0


def test_third_party_warnings_stay_off_the_console(monkeypatch):
    import logging
    import warnings

    from serving.cli.console import quiet_third_party

    monkeypatch.delenv("LEADSCORE_DEBUG", raising=False)
    monkeypatch.setenv("MLFLOW_LOGGING_LEVEL", "INFO")  # restored after the test
    level = logging.getLogger("mlflow").level
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            quiet_third_party()
            warnings.warn("Hint: Inferred schema contains integer column(s).", UserWarning)
            warnings.warn("serialized using CloudPickle", UserWarning)
            warnings.warn("our own warning", UserWarning)
        assert [str(w.message) for w in caught] == ["our own warning"]
        assert logging.getLogger("mlflow").level == logging.ERROR
    finally:
        logging.getLogger("mlflow").setLevel(level)


@pytest.mark.parametrize("setting, message", [("LEADSCORE_TIMEOUT_S", "LEADSCORE_TIMEOUT_S='abc' is not a whole number"),
                                              ("LEADSCORE_MODEL_RELOAD_S", "LEADSCORE_MODEL_RELOAD_S='x' is not")])
def test_a_bad_setting_is_one_line_and_exit_2_before_the_server_starts(monkeypatch, setting, message):
    monkeypatch.setenv(setting, "abc" if setting == "LEADSCORE_TIMEOUT_S" else "x")
    out = CliRunner().invoke(app, ["serve", "--port", "1"])  # checked before the port
    assert out.exit_code == 2 and out.output.strip().count("\n") == 0 and message in out.output, out.output

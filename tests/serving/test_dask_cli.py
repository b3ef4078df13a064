"""The `--cluster` option and `generate --partitions` on the command line: a bad spec is
one line and exit code 2 before anything runs (no cluster is started here)."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from features.dataset import dataset_partitions, read_dataset
from serving.cli import app


@pytest.mark.parametrize("command", [
    ["features", "--as-of", "2024-01-01", "--out", "f.parquet"], ["train"], ["score", "--out", "s.csv"],
    ["backtest", "--out", "b.json"]])
@pytest.mark.parametrize("spec", ["local:0", "localhost:8786", "tcp://host"])
def test_a_bad_cluster_spec_is_one_line_exit_2(command, spec, tmp_path):
    out = CliRunner().invoke(app, [command[0], "--data", str(tmp_path), *command[1:], "--cluster", spec])
    assert out.exit_code == 2, out.output
    assert "--cluster" in out.output and "Traceback" not in out.output


def test_the_scheduler_variable_is_the_option(tmp_path, monkeypatch):
    monkeypatch.setenv("LEADSCORE_DASK_SCHEDULER", "not-a-cluster")
    out = CliRunner().invoke(app, ["features", "--data", str(tmp_path), "--as-of", "2024-01-01", "--out", "f.parquet"])
    assert out.exit_code == 2 and "LEADSCORE_DASK_SCHEDULER" in out.output


def test_distributed_fit_needs_a_cluster(tmp_path):
    out = CliRunner().invoke(app, ["train", "--data", str(tmp_path), "--distributed-fit"])
    assert out.exit_code == 2 and "--distributed-fit needs --cluster" in out.output


def test_the_training_rows_cap_needs_a_cluster(tmp_path):
    out = CliRunner().invoke(app, ["train", "--data", str(tmp_path), "--max-training-rows", "50000"])
    assert out.exit_code == 2 and "--max-training-rows needs --cluster" in out.output
    out = CliRunner().invoke(app, ["train", "--data", str(tmp_path), "--max-training-rows", "10", "--cluster", "local:1"])
    assert out.exit_code == 2 and "--max-training-rows" in out.output and "Traceback" not in out.output


def test_generate_partitions(tmp_path):
    out = CliRunner().invoke(app, ["generate", "--deals", "400", "--seed", "3", "--partitions", "3",
                                   "--out", str(tmp_path / "p")])
    assert out.exit_code == 0, out.output
    assert dataset_partitions(tmp_path / "p") == 3 and len(read_dataset(tmp_path / "p").deals) == 400
    out = CliRunner().invoke(app, ["generate", "--deals", "400", "--partitions", "3", "--export", str(tmp_path / "e")])
    assert out.exit_code == 2 and "--partitions needs --out" in out.output

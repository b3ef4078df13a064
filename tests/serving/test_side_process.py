"""The CLI's MLflow side process: calls in order, results and errors back, stopped at once on an error;
and `leadscore forecast` itself never imports MLflow (the side process does)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import models_cache
import pytest

from features.errors import LeadscoreError
from serving.cli.side_process import SideProcess, SideProcessError, side_process

ROOT = Path(__file__).resolve().parents[2]


def _refuse(message: str) -> None:
    raise LeadscoreError(message)


def test_calls_run_in_order_in_another_process_and_answer_in_any_order():
    with side_process() as side:
        first = side.submit(os.getpid)
        failed = side.submit(_refuse, "no champion model registered")
        last = side.submit(sorted, [3, 1, 2])
        assert last() == [1, 2, 3]  # waiting for a later call keeps the earlier answers
        with pytest.raises(LeadscoreError, match="^no champion model registered$"):
            failed()
        assert first() not in (os.getpid(), None)


def test_the_childs_traceback_is_a_note_under_debug(monkeypatch):
    monkeypatch.setenv("LEADSCORE_DEBUG", "1")
    with side_process() as side, pytest.raises(LeadscoreError) as caught:
        side.submit(_refuse, "broken")()
    assert "in the MLflow side process" in "".join(caught.value.__notes__)


def test_a_child_that_dies_is_one_clear_error():
    side = SideProcess()
    pid = side.submit(os.getpid)()
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(SideProcessError, match="stopped .* before it answered"):
        side.submit(os.getpid)()
    side.close()


def test_an_error_in_the_command_stops_the_child_at_once():
    started = time.monotonic()
    with pytest.raises(LeadscoreError, match="bad option"), side_process() as side:
        pid = side.submit(os.getpid)()
        side.submit(time.sleep, 60)
        raise LeadscoreError("bad option")
    assert time.monotonic() - started < 10
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone, not left running its call


def _cached_mlflow_stores() -> int:
    from mlflow.tracking._tracking_service.registry import TrackingStoreRegistry

    return TrackingStoreRegistry._get_store_with_resolved_uri.cache_info().currsize


def _experiments() -> list[str]:
    from training.tracking import mlflow_client

    return sorted(e.name for e in mlflow_client().search_experiments())


def test_the_child_opens_mlflow_stores_of_its_own(local_mlflow_uri):
    # a database connection must not cross fork(): the stores this process opened are not the child's
    from training.tracking import ensure_experiment

    ensure_experiment("opened-here")
    assert _cached_mlflow_stores() > 0
    with side_process() as side:
        assert side.submit(_cached_mlflow_stores)() == 0
        assert "opened-here" in side.submit(_experiments)()  # the same database, through its own connection


@pytest.mark.slow(reason="a whole `leadscore forecast` in a Python child that imports the forecast's libraries")
def test_the_forecast_command_leaves_mlflow_to_the_side_process(tmp_path, local_mlflow_uri):
    from features.dataset import write_dataset
    from training.run import log_run

    data, _truth = models_cache.small_data()
    folder = write_dataset(data, tmp_path / "data")
    log_run(models_cache.small_train_result(), data, "forecast-cli", "leadscore", folder)
    script = ("import sys\nfrom serving.cli import app\n"
              "try:\n    app()\nexcept SystemExit as done:\n    code = done.code\n"
              "print('MLFLOW_LOADED', 'mlflow' in sys.modules, code)\n")
    args = ["forecast", "--data", str(folder), "--as-of", "2024-06-10", "--periods", "2", "--sims", "200",
            "--out", str(tmp_path / "f.json")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LEADSCORE_STORE_URL": f"sqlite:///{tmp_path / 'store.db'}"}
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=600)
    assert "MLFLOW_LOADED False 0" in done.stdout, done.stdout + done.stderr
    written = json.loads((tmp_path / "f.json").read_text())
    assert written["notes"][-1].startswith("model leadscore v")
    import mlflow

    run = mlflow.search_runs(experiment_names=["leadscore-forecast"]).iloc[0]  # logged by the side process
    assert json.loads(mlflow.artifacts.load_text(f"runs:/{run['run_id']}/forecast.json")) == written

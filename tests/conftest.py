"""Shared fixtures: real MLflow tracking stores for the tracking and e2e tests."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from processes import free_port, stop_process_group

SERVER_START_TIMEOUT_S = 180  # generous: a loaded 2-core machine needs ~1 min to import MLflow


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> str:
    """A real `mlflow server` process (SQLite backend, proxied artifact folder) on a free
    local port; yields its http URI and stops it at the end of the session."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = root / "server.log"
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow_cli), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
               "--artifacts-destination", str(root / "artifacts")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no background job workers to fork
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                pytest.fail(f"mlflow server did not become healthy at {url}:\n{tail}")
            time.sleep(0.5)
        yield url
    finally:
        stop_process_group(proc, timeout_s=15)


@pytest.fixture(scope="session")
def _migrated_mlflow_db(tmp_path_factory) -> Path:
    """An empty tracking database with MLflow's schema migrations already applied; each
    test copies it instead of migrating a new one (seconds each on a loaded machine)."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def local_mlflow_uri(tmp_path, monkeypatch, _migrated_mlflow_db) -> str:
    """A fresh embedded tracking store (`sqlite:///<tmp>/mlflow.db`), set as
    MLFLOW_TRACKING_URI for the test; MLflow's process-wide URI is reset afterwards."""
    shutil.copyfile(_migrated_mlflow_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    yield uri
    if "mlflow" in sys.modules:
        import mlflow

        # set_tracking_uri also exports the env var; monkeypatch restores it after this
        mlflow.set_tracking_uri(None)

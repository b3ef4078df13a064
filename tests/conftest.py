"""Shared fixtures (real MLflow tracking stores for the tracking and e2e tests) and the
`slow` tier: `make test-fast` runs `pytest -m "not slow"`, `make test` runs everything."""
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

TESTS = Path(__file__).resolve().parent

SERVER_START_TIMEOUT_S = 180  # generous: a loaded 2-core machine needs ~1 min to import MLflow

# What makes a test slow, by what it uses. Fixtures: every test that depends on one of
# these, directly or through another fixture, has its name in `item.fixturenames`.
SLOW_FIXTURES = {
    "mlflow_server": "starts `mlflow server`",
    "served": "starts `bentoml serve`",
    "serve_once": "starts `bentoml serve`",
    "e2e_service": "starts `bentoml serve`",
    "trained": "trains a full model with the CLI",
}
SLOW_FOLDERS = {"e2e": "starts real server processes", "notebooks": "executes the notebook"}
BROWSER_FILE = "browser"  # test files that render pages in headless Chromium
# functions that train and evaluate a full predictor; a test calling one itself is slow
# (the small predictor of tests/models_cache.py is trained once per run and stays fast)
FULL_TRAININGS = frozenset({"training.train.fit_predictor", "training.run.train"})


def slow_reason(item: pytest.Item) -> str | None:
    """Why `item` belongs to the slow tier, or None for the fast tier."""
    path = Path(str(item.path))
    folder = path.relative_to(TESTS).parts[0]
    if folder in SLOW_FOLDERS:
        return SLOW_FOLDERS[folder]
    if BROWSER_FILE in path.name:
        return "runs headless Chromium"
    fixtures = [SLOW_FIXTURES[name] for name in getattr(item, "fixturenames", ()) if name in SLOW_FIXTURES]
    if fixtures:
        return fixtures[0]
    trainings = sorted(_called_functions(item) & FULL_TRAININGS)
    return f"trains a full model ({trainings[0]})" if trainings else None


def _called_functions(item: pytest.Item) -> set[str]:
    """Qualified names (module.name) of the module-level functions a test's body names."""
    function = getattr(item, "function", None)
    if function is None:
        return set()
    named = (function.__globals__.get(name) for name in function.__code__.co_names)
    return {f"{obj.__module__}.{obj.__qualname__}" for obj in named if callable(obj) and hasattr(obj, "__qualname__")}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        reason = slow_reason(item)
        if reason:
            item.add_marker(pytest.mark.slow(reason=reason))


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

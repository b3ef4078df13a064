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
from types import ModuleType

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
    "trained": "trains a model with the CLI",
}
SLOW_FOLDERS = {"e2e": "starts real server processes", "notebooks": "executes the notebook"}
BROWSER_FILE = "browser"  # test files that render pages in headless Chromium
# Functions that fit a whole predictor (both LightGBM models, explainer, evaluation): a
# test is slow when its body or one of its fixtures calls one. The cached small predictor
# of tests/models_cache.py counts: ~10 s of CPU once, more on a busy machine.
FULL_TRAININGS = frozenset({"training.train.fit_predictor", "training.run.train",
                            "models_cache.small_train_result", "models_cache.small_predictor"})
TRAINING_MODULES = frozenset(name.rpartition(".")[0] for name in FULL_TRAININGS)


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
    trainings = sorted(set().union(*map(_called_functions, _functions_used(item))) & FULL_TRAININGS)
    return f"trains a predictor ({trainings[0]})" if trainings else None


def _functions_used(item: pytest.Item) -> list:
    """The test function and the functions of every fixture it depends on."""
    test = getattr(item, "function", None)
    info = getattr(item, "_fixtureinfo", None)
    fixtures = [d.func for defs in (info.name2fixturedefs.values() if info else ()) for d in defs]
    return [f for f in [test, *fixtures] if hasattr(f, "__code__")]


def _called_functions(function) -> set[str]:
    """Qualified names (module.name) of the functions a body names, also as `module.name`
    (a module imported inside the body is a local name: look it up among loaded modules)."""
    code = function.__code__
    names = code.co_names
    found = [function.__globals__.get(name, sys.modules.get(name)) for name in names + code.co_varnames]
    modules = [obj for obj in found if isinstance(obj, ModuleType) and obj.__name__ in TRAINING_MODULES]
    found += [getattr(module, name, None) for module in modules for name in names]
    return {_qualified_name(obj) for obj in found if callable(obj)}


def _qualified_name(obj) -> str:
    return f"{getattr(obj, '__module__', None)}.{getattr(obj, '__qualname__', None)}"


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

"""A real `bentoml serve` process for the HTTP tests: one per session, on a free port,
serving a model registered in a temporary SQLite MLflow store."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import models_cache
import pandas as pd
import pytest
from processes import free_port, stop_process_group

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "test-key-" + "x" * 24
START_TIMEOUT_S = 120
AS_OF = "2024-10-01T00:00:00"


def bentoml_env(tracking_uri: str, data_dir: str | None = None, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "LEADSCORE_", "BENTOML_"))}
    env.update({"MLFLOW_TRACKING_URI": tracking_uri, "LEADSCORE_API_KEYS": API_KEY,
                "BENTOML_HOME": str(Path(tracking_uri.removeprefix("sqlite:///")).parent / "bentoml_home")})
    if data_dir:
        env["LEADSCORE_DATA"] = str(data_dir)
    env.update(extra)
    return env


def start_service(env: dict, log_path: Path) -> tuple[subprocess.Popen, str]:
    """Start `bentoml serve` and wait until /readyz answers (fail with the log tail if not)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(Path(sys.executable).with_name("bentoml")), "serve", "serving.service:LeadScoreService",
               "--host", "127.0.0.1", "--port", str(port)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process_group(proc)
            pytest.fail(f"bentoml serve did not become ready:\n{log_path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.5)


def register_small_model(tracking_uri: str, data_dir: Path) -> int:
    """Log + register the cached small predictor as champion in `tracking_uri`."""
    from features.dataset import write_dataset
    from training.run import log_run

    data, _truth = models_cache.small_data()
    write_dataset(data, data_dir)
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    try:
        summary = log_run(models_cache.small_train_result(), data, "serving-tests", "leadscore", data_dir)
    finally:
        import mlflow

        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old
        mlflow.set_tracking_uri(old)
    assert summary["alias"] == "champion"
    return int(summary["model_version"])


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    """(base url, model version, data dir) of a running service with a champion."""
    root = tmp_path_factory.mktemp("served")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    version = register_small_model(uri, root / "data")
    # a short header-read timeout, so its test does not wait the default 10 s
    proc, url = start_service(bentoml_env(uri, root / "data", LEADSCORE_HEADER_TIMEOUT_S="2"), root / "bentoml.log")
    try:
        yield {"url": url, "api_key": API_KEY, "version": version, "data_dir": root / "data", "log": root / "bentoml.log",
               "pid": proc.pid}
    finally:
        stop_process_group(proc)


@pytest.fixture(scope="session")
def client(served):
    with httpx.Client(base_url=served["url"], headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
def open_deals():
    """Deals open at AS_OF as request payloads (only what was known then)."""
    from payloads import payload_records

    data, _truth = models_cache.small_data()
    return payload_records(data, pd.Timestamp(AS_OF))


@pytest.fixture
def serve_once(tmp_path):
    """Run `bentoml serve` to completion (for start-up refusals); returns the CompletedProcess."""
    def run(tracking_uri: str, **extra: str) -> subprocess.CompletedProcess:
        command = [str(Path(sys.executable).with_name("bentoml")), "serve", "serving.service:LeadScoreService",
                   "--host", "127.0.0.1", "--port", str(free_port())]
        env = bentoml_env(tracking_uri, **extra)
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    return run


@pytest.fixture(scope="session")
def server_kit():
    """The helpers above for tests that run their own server on their own registry."""
    from types import SimpleNamespace

    return SimpleNamespace(start=start_service, env=bentoml_env, register=register_small_model, api_key=API_KEY,
                           root=ROOT)

"""End-to-end fixtures: a CRM history trained into a real `mlflow server` with the CLI,
and a real `bentoml serve` loading the champion from that server."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from processes import free_port, stop_process_group

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "e2e-key-" + "y" * 24
E2E_DEALS = 3000
START_TIMEOUT_S = 120


def cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    """Run `leadscore ARGS`; fail the test with its output when it fails."""
    command = [str(Path(sys.executable).with_name("leadscore")), *args]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"leadscore {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc


@pytest.fixture(scope="session")
def e2e_env(mlflow_server) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "LEADSCORE_"))}
    env["MLFLOW_TRACKING_URI"] = mlflow_server
    return env


@pytest.fixture(scope="session")
def trained(tmp_path_factory, e2e_env) -> dict:
    """`leadscore generate` + `leadscore train` against the MLflow server."""
    data_dir = tmp_path_factory.mktemp("e2e") / "data"
    cli("generate", "--out", str(data_dir), "--deals", str(E2E_DEALS), "--seed", "3", env=e2e_env)
    cli("train", "--data", str(data_dir), "--metrics-out", str(data_dir.parent / "metrics.json"), env=e2e_env)
    return {"data_dir": data_dir, "env": e2e_env}


@pytest.fixture(scope="session")
def e2e_service(trained, tmp_path_factory) -> str:
    """Base URL of `bentoml serve` with the champion from the MLflow server."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("e2e_bento") / "bentoml.log"
    env = {**trained["env"], "LEADSCORE_API_KEYS": API_KEY, "LEADSCORE_DATA": str(trained["data_dir"]),
           "BENTOML_HOME": str(log_path.parent / "home")}
    command = [str(Path(sys.executable).with_name("bentoml")), "serve", "serving.service:LeadScoreService",
               "--host", "127.0.0.1", "--port", str(port)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"bentoml serve did not become ready:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        stop_process_group(proc)


@pytest.fixture(scope="session")
def leadscore_cli():
    """`leadscore` as a function: leadscore_cli(*args, env=...) -> CompletedProcess."""
    return cli

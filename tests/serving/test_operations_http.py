"""Operations of the real service (issue 14 item 4, issue 16 item 4), with `bentoml serve`:
a promotion is picked up without dropping requests, a worker restart keeps the pinned
version, damaged champion files, an unreadable store or data of another dataset refuse the
start in one line, a bad setting is one line before anything starts, `kill -9` of
`leadscore serve` orphans nothing, and a 14 MB request does not hold up the others."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import models_cache
import psutil
import pytest
from processes import free_port, log_text_once, stop_process_group

from training import artifacts, registry, tracking

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def store(tmp_path_factory, server_kit):
    """A registry whose champion is the small model (v1); the promotion test adds v2."""
    root = tmp_path_factory.mktemp("ops_store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    first = server_kit.register(uri, root / "data")
    return {"uri": uri, "root": root, "data_dir": root / "data", "v1": first}


@pytest.fixture(scope="module")
def kit(server_kit):
    return server_kit


@pytest.fixture(scope="module")
def headers(server_kit) -> dict:
    return {"Authorization": f"Bearer {server_kit.api_key}"}


def _with_uri(uri: str, fn, *args, **kwargs):
    """Run a registry function against `uri` (the tests' process default is another store)."""
    import mlflow

    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        return fn(*args, **kwargs)
    finally:
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old
        mlflow.set_tracking_uri(old)


def _one_deal(open_deals) -> dict:
    return {"deals": open_deals[:1], "as_of": "2024-10-01T00:00:00"}


def _worker(proc: subprocess.Popen) -> psutil.Process:
    """The uvicorn worker process under `bentoml serve` (the one that loads the model)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        kids = [p for p in psutil.Process(proc.pid).children(recursive=True)
                if "_bentoml_impl.worker" in " ".join(p.cmdline()) or "worker" in " ".join(p.cmdline()[1:3])]
        if kids:
            return kids[0]
        time.sleep(0.2)
    raise AssertionError("no worker process found under bentoml serve")


def _version_after_restart(url: str, proc: subprocess.Popen, body: dict, headers: dict) -> str:
    """Kill -9 the worker, wait for its replacement to answer, return the version it serves."""
    old = _worker(proc)
    old.kill()
    old.wait(10)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            r = httpx.post(f"{url}/score", json=body, headers=headers, timeout=10)
            if r.status_code == 200:
                return r.headers["x-model-version"]
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError("the worker did not come back")


def test_a_promotion_is_picked_up_without_dropping_requests(store, kit, headers, open_deals, tmp_path):
    log_path = tmp_path / "bentoml.log"
    proc, url = kit.start(kit.env(store["uri"], store["data_dir"], LEADSCORE_MODEL_RELOAD_S="1"), log_path)
    body, seen, stop = _one_deal(open_deals), [], threading.Event()

    def hammer():
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            while not stop.is_set():
                try:
                    r = client.post("/score", json=body)
                except httpx.HTTPError as exc:  # a dropped request counts as one
                    seen.append((type(exc).__name__, None, None))
                    continue
                seen.append((r.status_code, r.headers.get("x-model-version"),
                             r.json()["deals"][0]["model_version"] if r.status_code == 200 else None))

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        summary = _with_uri(store["uri"], _register_again, store)
        v2 = int(summary["model_version"])
        assert summary["alias"] == "champion", summary["gate_reason"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(v == str(v2) for _s, v, _b in seen[-5:]):
            time.sleep(0.5)
        time.sleep(1)
        stop.set()
        for t in threads:
            t.join(30)
        store["v2"] = v2
        statuses = {s for s, _v, _b in seen}
        versions = [v for _s, v, _b in seen]
        assert statuses == {200}, f"{len(seen)} requests, statuses {statuses}"
        assert versions[0] == str(store["v1"]) and versions[-1] == str(v2)
        first_new = versions.index(str(v2))
        assert all(v == str(v2) for v in versions[first_new + 5:])  # (two clients: a few in flight may finish on v1)
        assert all(str(b) == v for _s, v, b in seen)  # the header names the version that scored
        text = log_text_once(log_path, f"now serving v{v2}")
        assert f"model reload: now serving v{v2} (was v{store['v1']})" in text
        # a worker restart after the promotion serves the promoted version (the pin moved with it)
        assert _version_after_restart(url, proc, body, headers) == str(v2)
    finally:
        stop.set()
        stop_process_group(proc)


def _register_again(store) -> dict:
    """Log and gate the same small model once more: equal Brier, so the gate promotes it."""
    from features.dataset import read_dataset
    from training.run import log_run

    data = read_dataset(store["data_dir"])
    return log_run(models_cache.small_train_result(), data, "serving-tests", "leadscore", store["data_dir"])


def test_a_worker_restart_keeps_the_pinned_version(store, kit, headers, open_deals, tmp_path):
    if "v2" not in store:
        pytest.fail("needs the promotion test's second version (run the module in order)")
    proc, url = kit.start(kit.env(store["uri"], store["data_dir"], LEADSCORE_MODEL_RELOAD_S="0"),
                          tmp_path / "bentoml.log")
    try:
        body = _one_deal(open_deals)
        assert httpx.post(f"{url}/score", json=body, headers=headers, timeout=30).headers["x-model-version"] \
            == str(store["v2"])
        _with_uri(store["uri"], registry.promote, "leadscore", store["v1"])  # the alias moves; reload is off
        assert _version_after_restart(url, proc, body, headers) == str(store["v2"])
    finally:
        stop_process_group(proc)
        _with_uri(store["uri"], registry.promote, "leadscore", store["v2"])


def _model_file(store) -> Path:
    folder = _with_uri(store["uri"], artifacts.verified_artifacts, "leadscore",
                       _with_uri(store["uri"], registry.require_champion, "leadscore"))
    return folder / "artifacts" / "predictor.pkl"


def _last_line(proc: subprocess.CompletedProcess) -> str:
    return [line for line in proc.stderr.splitlines() if line.strip()][-1]


@pytest.mark.parametrize("damage", ["truncate", "delete", "checksum"])
def test_damaged_champion_files_refuse_the_start_in_one_line(store, serve_once, damage):
    target = _model_file(store)
    assert target.is_file()
    original = target.read_bytes()
    folder = target.parent.parent
    version = _with_uri(store["uri"], registry.require_champion, "leadscore")
    client = _with_uri(store["uri"], tracking.mlflow_client)
    tag = client.get_model_version("leadscore", str(version)).tags[artifacts.ARTIFACTS_TAG]
    try:
        if damage == "truncate":
            target.write_bytes(original[: len(original) // 2])
        elif damage == "delete":
            shutil.move(folder, folder.with_name("moved-away"))
        else:
            client.set_model_version_tag("leadscore", str(version), artifacts.ARTIFACTS_TAG, "0" * 64)
        proc = serve_once(store["uri"], LEADSCORE_DATA=str(store["data_dir"]))
    finally:
        if damage == "delete":
            shutil.move(folder.with_name("moved-away"), folder)
        target.write_bytes(original)
        client.set_model_version_tag("leadscore", str(version), artifacts.ARTIFACTS_TAG, tag)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    expected = "are missing" if damage == "delete" else "do not match the sha256 recorded at registration"
    assert _last_line(proc).startswith(f"error: the model files of leadscore v{version}") and \
        expected in _last_line(proc), proc.stderr[-2000:]


def test_data_of_another_dataset_refuses_the_start_in_one_line(store, serve_once, tmp_path):
    """LEADSCORE_DATA holding another dataset than the champion's (other stages) is refused
    before the workers start (serving/loader.py: `check_model_data` on the folder's meta.json)."""
    meta = json.loads((store["data_dir"] / "meta.json").read_text())
    other = tmp_path / "other"
    other.mkdir()
    (other / "meta.json").write_text(json.dumps({**meta, "name": "other_crm", "stages": ["Lead", "Interested"]}))
    proc = serve_once(store["uri"], LEADSCORE_DATA=str(other))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = _last_line(proc)
    # the champion of the module's store (an earlier test may have promoted another version)
    assert re.match(r"error: model 'leadscore v\d+' was trained on dataset 'synthetic' and ", line) and \
        f"{other} holds dataset 'other_crm': they do not belong together (stages" in line, proc.stderr[-2000:]


def test_an_unreadable_registry_refuses_the_start_in_one_line(serve_once, tmp_path):
    (tmp_path / "mlflow.db").write_bytes(b"not a database at all\n" * 100)
    proc = serve_once(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert _last_line(proc).startswith("error: the model registry at sqlite:///") and "cannot be read" in \
        _last_line(proc)


def test_kill_9_of_leadscore_serve_orphans_no_server(store, kit, tmp_path):
    port = free_port()
    env = kit.env(store["uri"], store["data_dir"])
    log = open(tmp_path / "serve.log", "wb")
    wrapper = subprocess.Popen([sys.executable, "-m", "serving.cli", "serve", "--port", str(port)], cwd=ROOT,
                               env={**env, "PYTHONPATH": str(ROOT)}, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert wrapper.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.5)
        server = psutil.Process(wrapper.pid).children()[0]
        family = [server, *server.children(recursive=True)]
        assert len(family) >= 2  # bentoml serve and its worker
        wrapper.send_signal(signal.SIGKILL)
        wrapper.wait(10)
        gone, alive = psutil.wait_procs(family, timeout=60)
        assert not alive, [p.cmdline()[:3] for p in alive]
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
        for p in psutil.process_iter():  # never leave a server behind, even when the test fails
            try:
                if f"--port {port}" in " ".join(p.cmdline()):
                    p.kill()
            except psutil.Error:
                pass
        log.close()


def _body_parsers(server_pid: int) -> list[psutil.Process]:
    """The body-parsing processes (multiprocessing "spawn" children) under the served workers."""
    found = []
    for p in psutil.Process(server_pid).children(recursive=True):
        try:
            if "multiprocessing.spawn" in " ".join(p.cmdline()):
                found.append(p)
        except psutil.Error:
            pass
    return found


def test_a_14_mb_request_is_parsed_off_the_worker_and_small_ones_keep_flowing(served, client, headers, open_deals):
    """The mechanism, not a timing (timings are in benchmarks/bench_load.py: small requests
    during a 14 MB one): a 14 MB body is validated in the body-parsing process, not in the
    worker, while small requests keep being answered; the big one's answer is the same deal."""
    deal = dict(open_deals[0])
    activity = {"type": "email", "occurred_at": "2024-09-01T00:00:00"}
    deal["activities"] = [activity] * (14 * 2**20 // len(json.dumps(activity)))
    big = json.dumps({"deals": [deal], "as_of": "2024-10-01T00:00:00"}).encode()
    assert 13 * 2**20 < len(big) < 16 * 2**20
    small = _one_deal(open_deals)
    answered, done, answer = 0, threading.Event(), []

    def send_big():
        answer.append(httpx.post(f"{served['url']}/score", content=big, timeout=300,
                                 headers={**headers, "Content-Type": "application/json"}))
        done.set()

    sender = threading.Thread(target=send_big)
    sender.start()
    while not done.is_set():
        assert client.post("/score", json=small).status_code == 200
        answered += 1
    sender.join(300)
    response = answer[0]
    assert response.status_code == 200, response.text[:300]
    assert response.json()["deals"][0]["deal_id"] == deal["deal_id"]
    assert answered >= 2  # small requests were answered while the big one was in flight
    # validated in the worker (the old path), no body-parsing process would exist
    assert _body_parsers(served["pid"]), [p.cmdline()[:3] for p in psutil.Process(served["pid"]).children(recursive=True)]

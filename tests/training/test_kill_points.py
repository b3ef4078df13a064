"""kill -9 at each step of a training run's registration and gate (issue 14, item 5): the
registry is never left with a version promotable without `--force` that did not pass the
gate, the champion stays intact (its files check out), and the registry lock is free."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from registry_helpers import log_constant_model

from training import artifacts, gate, registry, tracking

pytestmark = pytest.mark.slow  # each case starts a Python child that imports MLflow
CHILD = Path(__file__).with_name("kill_child.py")


def _kill_at(point: str, tmp_path: Path) -> str:
    marker = tmp_path / f"{point}.reached"
    run_id = log_constant_model(0.2, "killed")
    child = subprocess.Popen([sys.executable, str(CHILD), point, str(marker), run_id], env=dict(os.environ),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while not marker.exists():
        assert child.poll() is None and time.monotonic() < deadline, child.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    return marker.read_text()


@pytest.mark.parametrize("point", ["registered", "before_gate", "promoting", "alias_moved"])
def test_kill_9_at_each_step_leaves_a_sound_registry(local_mlflow_uri, tmp_path, point):
    champion = gate.register_and_gate(log_constant_model(0.3, "champion"), "model", "killed",
                                      candidate=gate.HoldoutScore(0.25, 0.8, 0.4),
                                      skill={"n": 100, "z_vs_base_rate": 10.0, "z_vs_stage_rate": 10.0}).version
    assert _kill_at(point, tmp_path) == point

    with tracking.registry_lock(timeout_s=2):  # the dead child's lock was dropped with it
        pass
    client = tracking.mlflow_client()
    versions = {int(v.version): v.tags or {} for v in client.search_model_versions("name = 'killed'")}
    now = registry.champion_version("killed")
    if point == "alias_moved":  # the alias moved after the gate passed: the new version is a sound champion
        assert now != champion and versions[now][registry.GATE_TAG] == registry.CHAMPION
    else:
        assert now == champion
    artifacts.verified_artifacts("killed", now)  # the champion's files check out
    unjudged = [v for v, tags in versions.items() if tags.get(registry.GATE_TAG) != registry.CHAMPION]
    assert (point in ("registered", "before_gate")) == bool(unjudged)
    for version in unjudged:
        with pytest.raises(registry.RegistryError, match="no gate decision .* --force"):
            registry.promote("killed", version)
        assert registry.champion_version("killed") == now
    if unjudged:  # by hand with --force: allowed, and recorded as such
        registry.promote("killed", unjudged[0], force=True)
        last = registry.champion_log("killed")[-1]
        assert last["version"] == unjudged[0] and last["by"] == "promote --force" and "no gate decision" in \
            last["reason"]

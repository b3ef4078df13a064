"""A registered version's files are checked before they are loaded (issue 14, operations):
the sha256 recorded at registration, a truncated, deleted or altered model refused in one
line, and an unreadable tracking store as one line. Real MLflow stores, constant models."""
from __future__ import annotations

import shutil

import pytest
from registry_helpers import log_constant_model

from training import artifacts, gate, registry
from training.tracking import mlflow_client


def _register(name: str = "ops") -> int:
    decision = gate.register_and_gate(log_constant_model(0.4, "ops"), "model", name,
                                      candidate=gate.HoldoutScore(0.2, 0.8, 0.4),
                                      skill={"n": 100, "z_vs_base_rate": 10.0, "z_vs_stage_rate": 10.0})
    return decision.version


def _model_file(folder):
    return max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def test_registration_records_the_sha256_of_the_model_files(local_mlflow_uri):
    version = _register()
    tags = mlflow_client().get_model_version("ops", str(version)).tags
    folder = artifacts.verified_artifacts("ops", version)
    assert tags[artifacts.ARTIFACTS_TAG] == artifacts.artifacts_digest(folder)
    assert len(tags[artifacts.ARTIFACTS_TAG]) == 64


@pytest.mark.parametrize("damage,message", [
    ("truncate", "do not match the sha256 recorded at registration"),
    ("alter", "do not match the sha256 recorded at registration"),
    ("delete_file", "do not match the sha256 recorded at registration"),
    ("delete_folder", "model files of ops v1"),
])
def test_damaged_model_files_are_refused_in_one_line(local_mlflow_uri, damage, message):
    version = _register()
    folder = artifacts.verified_artifacts("ops", version)
    target = _model_file(folder)
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif damage == "alter":
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "delete_file":
        target.unlink()
    else:
        shutil.rmtree(folder)
    with pytest.raises(artifacts.ArtifactsCorrupt, match=message) as refused:
        registry.load_predictor("ops", version)
    assert "\n" not in str(refused.value) and "rollback" in str(refused.value) or "retrain" in str(refused.value)


def test_a_model_that_does_not_load_is_refused_in_one_line(local_mlflow_uri):
    version = _register()  # a constant pyfunc model: its files are intact, it is no LeadScorePredictor
    with pytest.raises(artifacts.ArtifactsCorrupt, match=r"ops v1 does not load \(AttributeError"):
        registry.load_predictor("ops", version)


@pytest.mark.parametrize("content", [b"this is not a database\n", "truncate"])
def test_a_corrupt_tracking_database_is_one_line(local_mlflow_uri, tmp_path, monkeypatch, content):
    _register()
    raw = open(local_mlflow_uri.removeprefix("sqlite:///"), "rb").read()
    damaged = tmp_path / "damaged" / "mlflow.db"  # a path this process never opened (no cached connection)
    damaged.parent.mkdir()
    damaged.write_bytes(raw[:1000] if content == "truncate" else content)  # truncate: cut inside its first page
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{damaged}")
    with pytest.raises(artifacts.RegistryUnavailable, match="the model registry at sqlite:///.* cannot be read") as e:
        registry.require_champion("ops")
    assert "\n" not in str(e.value)

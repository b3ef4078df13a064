"""A registered version's files are checked before they are loaded (issue 14, operations):
the sha256 recorded at registration, a truncated, deleted or altered model refused in one
line, and an unreadable tracking store as one line. Real MLflow stores, constant models."""
from __future__ import annotations

import pickle
import re
import shutil

import pytest
from registry_helpers import log_constant_model

from training import artifacts, gate, registry
from training.tracking import mlflow_client


def _register(name: str = "ops", artifacts: dict[str, str] | None = None) -> int:
    decision = gate.register_and_gate(log_constant_model(0.4, "ops", artifacts=artifacts), "model", name,
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


@pytest.mark.parametrize("packed,message", [
    (None, "its model has no 'predictor' artifact: it is no leadscore predictor"),
    (pickle.dumps({"not": "a predictor"}), "it holds a dict, not a LeadScorePredictor"),
    (b"not a pickle at all", "UnpicklingError"),
])
def test_a_model_that_does_not_load_is_refused_in_one_line(local_mlflow_uri, tmp_path, packed, message):
    # its files are intact (the sha256 recorded at registration matches): it is no LeadScorePredictor
    packed_file = tmp_path / "predictor.pkl"
    if packed is not None:
        packed_file.write_bytes(packed)
    version = _register(artifacts=None if packed is None else {artifacts.PREDICTOR_ARTIFACT: str(packed_file)})
    with pytest.raises(artifacts.ArtifactsCorrupt, match=rf"ops v1 does not load \({re.escape(message)}") as refused:
        registry.load_predictor("ops", version)
    assert "\n" not in str(refused.value) and str(refused.value).endswith("promote another version or retrain")


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


def test_the_loaded_predictor_scores_as_the_one_mlflow_pyfunc_wraps(local_mlflow_uri, small_data, small_predictor):
    # load_predictor unpickles the predictor from the files directly: the same scores as MLflow's own loader
    import mlflow
    import pandas as pd

    from training.pyfunc import log_predictor, unwrap
    from training.tracking import start_run

    data, _truth = small_data
    with start_run("ops-real") as run:
        log_predictor(small_predictor, data)
    version = gate.register_and_gate(run.info.run_id, "model", "ops", candidate=gate.HoldoutScore(0.2, 0.8, 0.4),
                                     skill={"n": 100, "z_vs_base_rate": 10.0, "z_vs_stage_rate": 10.0}).version
    loaded, loaded_version = registry.load_predictor("ops")
    wrapped = unwrap(mlflow.pyfunc.load_model(f"models:/ops/{version}"))
    assert loaded_version == version and type(loaded) is type(wrapped)
    as_of = data.data_end  # not 'now': two calls would differ by the clock
    pd.testing.assert_frame_equal(loaded.score(data, as_of, explain=True), wrapped.score(data, as_of, explain=True))

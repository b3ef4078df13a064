"""MLflow tracking: where runs go and what a run logs.

Embedded by default (SQLite + artifact folder under `<cwd>/.leadscore`, created when
first needed, never at import), or any tracking server through `MLFLOW_TRACKING_URI`.
Registered models, the promotion gate and loading a version are in `training.registry`.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd

EMBEDDED_DIR = ".leadscore"
LOCK_TIMEOUT_S = 600.0  # a gate scoring the champion holds the registry lock for a while
METRIC_BATCH = 1000  # MLflow's limit of metrics per log_batch call


# --- where runs go -------------------------------------------------------------------

def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` if set, else the embedded `sqlite:///<cwd>/.leadscore/mlflow.db`
    (its folder is created here, on first use)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if uri:
        return uri
    folder = Path.cwd() / EMBEDDED_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def artifact_location(uri: str) -> str | None:
    """Artifact folder for new experiments: next to the database for an embedded SQLite
    store (MLflow would otherwise write to ./mlruns of whatever the cwd is); None for a
    server, which decides for itself."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///"):])
    return (db.parent / "mlartifacts").resolve().as_uri()


def mlflow_client(uri: str | None = None):
    """An `MlflowClient` on `uri` (default: `tracking_uri()`)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri or tracking_uri())


def ensure_experiment(name: str, uri: str | None = None) -> str:
    """Id of experiment `name`, created (with the embedded artifact folder) if absent."""
    uri = uri or tracking_uri()
    client = mlflow_client(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location(uri))


def forget_inherited_stores() -> None:
    """In a forked child: forget the MLflow stores the parent had opened (their SQLAlchemy
    pools hold its database connections, which must not be used across fork()); the child
    then opens its own. Nothing to do when the parent had not loaded MLflow (the CLI)."""
    if "mlflow" not in sys.modules:
        return
    from mlflow.tracking._model_registry.registry import ModelRegistryStoreRegistry
    from mlflow.tracking._tracking_service.registry import TrackingStoreRegistry

    for registry in (TrackingStoreRegistry, ModelRegistryStoreRegistry):
        registry._get_store_with_resolved_uri.cache_clear()


def warm_run_context() -> None:
    """Resolve MLflow's run-context tags once (source, git commit, notebook checks): the first
    time imports GitPython and IPython (~0.1-0.2 CPU s). A command's side process does it
    while the command works, so that the command's run then starts at once."""
    from mlflow.tracking.context.registry import resolve_tags

    resolve_tags({})


@contextlib.contextmanager
def start_run(experiment: str, run_name: str | None = None,
              tags: Mapping[str, str] | None = None) -> Iterator[Any]:
    """Point MLflow at `tracking_uri()`, make sure `experiment` exists, and run inside it."""
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    experiment_id = ensure_experiment(experiment, uri)
    mlflow.set_experiment(experiment_id=experiment_id)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=dict(tags or {})) as run:
        yield run


def registry_lock_path(uri: str) -> Path:
    """The lock file of a registry: `<db>.lock` beside an embedded SQLite store; for a
    server, one per URI under ./.leadscore (it serialises this machine's writers only, so
    the registry also re-reads an alias before it moves it)."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):] + ".lock")
    folder = Path.cwd() / EMBEDDED_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"registry-{hashlib.sha256(uri.encode()).hexdigest()[:16]}.lock"


@contextlib.contextmanager
def registry_lock(timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[Path]:
    """Hold the registry's exclusive lock (threads and processes alike; the system drops
    it when a holder dies, even by kill -9). TimeoutError after `timeout_s`."""
    path = registry_lock_path(tracking_uri())
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the model registry is locked by another promotion ({path}); "
                                       f"try again when it has finished") from None
                time.sleep(0.05)
        try:
            yield path
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- what a run logs -------------------------------------------------------------------

def table_facts(frame: pd.DataFrame) -> dict:
    """What `data_fingerprint` needs of one table, or of one partition of it (`fingerprint_of`
    combines partitions): its schema, sorted row hashes, row count and timestamp range."""
    frame = frame.reindex(columns=sorted(frame.columns, key=str))
    stamps = [s for col in frame.columns if pd.api.types.is_datetime64_any_dtype(frame[col])
              for s in (frame[col].min(), frame[col].max())]
    return {"schema": json.dumps([[str(c), str(t)] for c, t in frame.dtypes.items()]).encode(),
            "hashes": np.sort(pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype="uint64")),
            "rows": int(len(frame)), "stamps": [s for s in stamps if pd.notna(s)]}


def fingerprint_of(tables: Mapping[str, list[dict]]) -> dict[str, str | int]:
    """`data_fingerprint` from each table's `table_facts`, one per partition (in any order:
    the same digest as the whole tables; the schema is the first partition's)."""
    digest = hashlib.sha256()
    out: dict[str, str | int] = {}
    stamps = []
    for name in sorted(tables):
        parts = tables[name]
        rows = np.sort(np.concatenate([p["hashes"] for p in parts]))
        digest.update(name.encode() + hashlib.sha256(parts[0]["schema"] + rows.tobytes()).digest())
        out[f"rows_{name}"] = sum(p["rows"] for p in parts)
        stamps.extend(s for p in parts for s in p["stamps"])
    out["data_sha256"] = digest.hexdigest()
    out["data_from"] = min(stamps).isoformat() if stamps else ""
    out["data_to"] = max(stamps).isoformat() if stamps else ""
    return out


def data_fingerprint(frames: Mapping[str, pd.DataFrame | None]) -> dict[str, str | int]:
    """What a run saw: sha256 over the canonical tables (row order does not matter,
    schema does), the row count of each table and the range of its timestamps."""
    return fingerprint_of({name: [table_facts(frame)] for name, frame in frames.items() if frame is not None})


# MLflow accepts letters, digits, _ - . space : and /; a "/" inside a group label such as
# "Proposal/Price Quote" would also make a path, so it is replaced too
_METRIC_NAME = re.compile(r"[^A-Za-z0-9_\-. :]")


def flatten_metrics(d: Mapping, prefix: str = "") -> dict[str, float]:
    """{"a": {"b": 1.0, "c": None}} -> {"a.b": 1.0}: numbers only (no None, NaN, bools,
    strings), names cleaned to the characters MLflow accepts."""
    out: dict[str, float] = {}
    for key, value in d.items():
        part = _METRIC_NAME.sub("_", str(key).strip())
        name = f"{prefix}.{part}" if prefix else part
        if isinstance(value, Mapping):
            out.update(flatten_metrics(value, name))
        elif _is_number(value) and math.isfinite(float(value)):
            out[name] = float(value)
    return out


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def log_metrics_nested(d: Mapping, prefix: str = "", artifact_file: str = "metrics.json") -> dict[str, float]:
    """Log a nested metrics dict into the active run as flat metric names, and the full
    dict as a JSON artifact. Returns the flat metrics that were logged."""
    import mlflow

    if mlflow.active_run() is None:
        raise RuntimeError("log_metrics_nested needs an active run: call it inside start_run()")
    flat = flatten_metrics(d, prefix)
    items = list(flat.items())
    for start in range(0, len(items), METRIC_BATCH):
        mlflow.log_metrics(dict(items[start:start + METRIC_BATCH]))
    mlflow.log_dict(_json_safe(d), artifact_file)
    return flat


def _json_safe(value):
    """Strict-JSON copy: NaN/inf -> None, numpy scalars -> Python, unknown objects -> str."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    if value is None or isinstance(value, str):
        return value
    return str(value)

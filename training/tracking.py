"""MLflow tracking, registry and promotion.

Embedded by default (SQLite + artifact folder under `<cwd>/.leadscore`, created when
first needed, never at import), or any tracking server through `MLFLOW_TRACKING_URI`.
A registered model has two aliases: `champion` (what serving loads) and `challenger`
(the last version the gate refused). The order in which versions held `champion` is
kept in a registered-model tag, so `rollback` knows what came before.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import pandas as pd

from features.errors import LeadscoreError

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_TAG = "leadscore.champion_history"  # JSON list of versions, oldest first
HISTORY_LIMIT = 100  # MLflow tag values are capped at a few kB
EMBEDDED_DIR = ".leadscore"
METRIC_BATCH = 1000  # MLflow's limit of metrics per log_batch call


class NoChampion(LeadscoreError, LookupError):
    """No version of the model holds the `champion` alias."""


class RegistryError(LeadscoreError, ValueError):
    """A promotion or rollback that the registry state does not allow."""


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


def _client(uri: str | None = None):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri or tracking_uri())


def ensure_experiment(name: str, uri: str | None = None) -> str:
    """Id of experiment `name`, created (with the embedded artifact folder) if absent."""
    uri = uri or tracking_uri()
    client = _client(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location(uri))


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


# --- what a run logs -------------------------------------------------------------------

def _frame_digest(frame: pd.DataFrame) -> bytes:
    """Order-independent digest of a table: its schema plus the sorted row hashes."""
    frame = frame.reindex(columns=sorted(frame.columns, key=str))
    schema = json.dumps([[str(c), str(t)] for c, t in frame.dtypes.items()]).encode()
    rows = np.sort(pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype="uint64"))
    return hashlib.sha256(schema + rows.tobytes()).digest()


def data_fingerprint(frames: Mapping[str, pd.DataFrame | None]) -> dict[str, str | int]:
    """What a run saw: sha256 over the canonical tables (row order does not matter,
    schema does), the row count of each table and the range of its timestamps."""
    digest = hashlib.sha256()
    out: dict[str, str | int] = {}
    stamps = []
    for name in sorted(k for k, v in frames.items() if v is not None):
        frame = frames[name]
        digest.update(name.encode() + _frame_digest(frame))
        out[f"rows_{name}"] = int(len(frame))
        for col in frame.columns:
            if pd.api.types.is_datetime64_any_dtype(frame[col]):
                stamps.extend([frame[col].min(), frame[col].max()])
    stamps = [s for s in stamps if pd.notna(s)]
    out["data_sha256"] = digest.hexdigest()
    out["data_from"] = min(stamps).isoformat() if stamps else ""
    out["data_to"] = max(stamps).isoformat() if stamps else ""
    return out


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


# --- registry and promotion ------------------------------------------------------------

@dataclass
class GateDecision:
    """Outcome of the promotion gate for one registered version."""

    version: int
    alias: str  # "champion" or "challenger"
    reason: str
    candidate: float | None
    champion: float | None
    champion_version: int | None = None
    metric: str = "brier"

    def to_dict(self) -> dict:
        return asdict(self)


def _champion_version(client, model_name: str) -> int | None:
    from mlflow.exceptions import MlflowException

    try:
        return int(client.get_model_version_by_alias(model_name, CHAMPION).version)
    except MlflowException:
        return None


def _history(client, model_name: str) -> list[int]:
    tags = client.get_registered_model(model_name).tags or {}
    return [int(v) for v in json.loads(tags.get(HISTORY_TAG, "[]"))]


def _set_champion(client, model_name: str, version: int) -> None:
    client.set_registered_model_alias(model_name, CHAMPION, str(version))
    history = _history(client, model_name)
    if not history or history[-1] != version:
        history.append(version)
    client.set_registered_model_tag(model_name, HISTORY_TAG, json.dumps(history[-HISTORY_LIMIT:]))


def _finite(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _judge(candidate: float | None, champion: float | None, champion_version: int | None,
           metric: str, higher_is_better: bool, tolerance: float,
           promote_if_incomparable: bool) -> tuple[bool, str]:
    """(promote?, why) for the candidate against the champion on the same holdout."""
    if champion_version is None:
        return True, "no champion yet"
    if candidate is None:
        return False, f"candidate has no {metric} on the holdout"
    if champion is None:
        if promote_if_incomparable:
            return True, f"champion v{champion_version} has no {metric} on this holdout: not comparable"
        return False, (f"champion v{champion_version} has no {metric} on this holdout to compare with; "
                       f"promote by hand with `leadscore promote VERSION` if the candidate is better")
    better = "higher" if higher_is_better else "lower"
    gap = (candidate - champion) if higher_is_better else (champion - candidate)
    if gap >= -tolerance:
        return True, (f"{metric} {candidate:.6g} vs champion v{champion_version} {champion:.6g} "
                      f"({better} is better): not worse")
    return False, (f"{metric} {candidate:.6g} is worse than champion v{champion_version} {champion:.6g} "
                   f"on the same holdout ({better} is better, tolerance {tolerance:g})")


def register_and_gate(run_id: str, artifact_path: str, model_name: str, *, candidate_score: float | None,
                      metric: str = "brier", higher_is_better: bool = False,
                      compare_fn: Callable[[int], float | None] | None = None, tolerance: float = 0.0,
                      model_uri: str | None = None, promote_if_incomparable: bool = False) -> GateDecision:
    """Register the model logged by `run_id` at `artifact_path` as a new version of
    `model_name`, then decide its alias.

    It becomes `champion` when there is none, or when `candidate_score` is not worse than
    the champion's score on the same holdout, which `compare_fn(champion_version)`
    computes (without `compare_fn`, the score recorded when the champion was registered
    is used). Otherwise it becomes `challenger`. When the champion has no score on this
    holdout (`compare_fn` raised or returned None, e.g. it cannot build features from the
    new data), the gate keeps the champion unless `promote_if_incomparable`. Tolerance is
    in metric units: "not worse" means at most `tolerance` worse. The reason is tagged on
    the version and on the run and returned. Pass `model_uri` (the `ModelInfo.model_uri` of `log_model`)
    to skip MLflow's lookup of the run's artifact path.
    """
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    client = _client()
    uri = model_uri or _logged_model_uri(client, run_id, artifact_path)
    version = int(mlflow.register_model(uri, model_name, tags={"leadscore.run_id": run_id}).version)
    candidate = _finite(candidate_score)
    champion_version = _champion_version(client, model_name)
    champion, note = None, ""
    if champion_version is not None:
        champion, note = _score_champion(client, model_name, champion_version, metric, compare_fn)
    promote_it, reason = _judge(candidate, champion, champion_version, metric, higher_is_better,
                                tolerance, promote_if_incomparable)
    if note and not promote_it:
        reason = f"{reason} ({note})"
    elif note:
        reason = f"{reason}; {note}"
    decision = GateDecision(version=version, alias=CHAMPION if promote_it else CHALLENGER, reason=reason,
                            candidate=candidate, champion=champion, champion_version=champion_version,
                            metric=metric)
    _record_decision(client, model_name, run_id, decision)
    return decision


def _logged_model_uri(client, run_id: str, artifact_path: str) -> str:
    """`models:/<model_id>` of the model the run logged under `artifact_path` (MLflow 3
    keeps logged models outside the run's artifacts); `runs:/` for older layouts."""
    experiment_id = client.get_run(run_id).info.experiment_id
    found = client.search_logged_models(
        experiment_ids=[experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND name = '{artifact_path}'", max_results=1)
    return found[0].model_uri if found else f"runs:/{run_id}/{artifact_path}"


def _score_champion(client, model_name: str, version: int, metric: str,
                    compare_fn: Callable[[int], float | None] | None) -> tuple[float | None, str]:
    """The champion's score on the candidate's holdout, plus a note when it is not that."""
    if compare_fn is None:
        tags = client.get_model_version(model_name, str(version)).tags or {}
        recorded = _finite(tags.get(f"leadscore.holdout.{metric}"))
        return recorded, "champion score as recorded at its own registration, not re-scored"
    try:
        return _finite(compare_fn(version)), ""
    except Exception as exc:  # noqa: BLE001 - an old champion that cannot score new data
        return None, f"champion v{version} could not be scored on this holdout: {type(exc).__name__}: {exc}"


def _record_decision(client, model_name: str, run_id: str, decision: GateDecision) -> None:
    version = str(decision.version)
    if decision.candidate is not None:
        client.set_model_version_tag(model_name, version, f"leadscore.holdout.{decision.metric}",
                                     repr(decision.candidate))
    client.set_model_version_tag(model_name, version, "leadscore.gate", decision.alias)
    client.set_model_version_tag(model_name, version, "leadscore.gate_reason", decision.reason[:4000])
    client.set_tag(run_id, "leadscore.model_version", version)
    client.set_tag(run_id, "leadscore.gate", decision.alias)
    client.set_tag(run_id, "leadscore.gate_reason", decision.reason[:4000])
    if decision.alias == CHAMPION:
        _set_champion(client, model_name, decision.version)
    else:
        client.set_registered_model_alias(model_name, CHALLENGER, version)


def _versions(client, model_name: str) -> list[int]:
    return sorted(int(v.version) for v in client.search_model_versions(f"name = '{model_name}'"))


def promote(model_name: str, version: int) -> int:
    """Make `version` the champion by hand (it joins the rollback history)."""
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        client.get_model_version(model_name, str(int(version)))
    except MlflowException:
        known = ", ".join(map(str, _versions_or_empty(client, model_name))) or "none"
        raise RegistryError(f"model '{model_name}' has no version {version} (versions: {known}); "
                            f"see them with `mlflow models` or the MLflow UI") from None
    _set_champion(client, model_name, int(version))
    return int(version)


def _versions_or_empty(client, model_name: str) -> list[int]:
    from mlflow.exceptions import MlflowException

    try:
        return _versions(client, model_name)
    except MlflowException:
        return []


def rollback(model_name: str) -> int:
    """Give `champion` back to the version that held it before the current one."""
    client = _client()
    current = _champion_version(client, model_name)
    if current is None:
        raise RegistryError(f"model '{model_name}' has no champion to roll back; run `leadscore train`")
    history = _history(client, model_name)
    while history and history[-1] == current:
        history.pop()
    existing = set(_versions(client, model_name))
    while history and history[-1] not in existing:  # deleted versions cannot come back
        history.pop()
    if not history:
        raise RegistryError(f"model '{model_name}' has no earlier champion than v{current} to roll "
                            f"back to; promote a version by hand with `leadscore promote VERSION`")
    previous = history[-1]
    client.set_registered_model_alias(model_name, CHAMPION, str(previous))
    client.set_registered_model_tag(model_name, HISTORY_TAG, json.dumps(history))
    return previous


def _redacted(uri: str) -> str:
    """The URI without user:password, for messages."""
    return re.sub(r"//[^/@]+@", "//***@", uri)


def champion_version(model_name: str) -> int | None:
    """The version holding `champion`, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return _champion_version(_client(), model_name)
    except MlflowException:
        return None


def load_champion(model_name: str):
    """(pyfunc model, version) of the champion; NoChampion when there is none."""
    import mlflow

    uri = tracking_uri()
    version = champion_version(model_name)
    if version is None:
        raise NoChampion(f"no champion model registered (model '{model_name}' at {_redacted(uri)}); "
                         f"run `leadscore train`")
    mlflow.set_tracking_uri(uri)
    return mlflow.pyfunc.load_model(f"models:/{model_name}/{version}"), version

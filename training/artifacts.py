"""A registered version's model files: their sha256 recorded at registration and checked
before they are loaded, and store failures as one line.

`register_and_gate` (training.gate) tags each new version with `ARTIFACTS_TAG`, the
`artifacts_digest` of its model folder; `verified_artifacts` (used by
`training.registry.load_predictor`, the one way a version is loaded) refuses a version whose
files are missing, truncated or altered with `ArtifactsCorrupt`, one line that says what to
do; `read_predictor` unpickles the predictor from them (the pyfunc model's artifact
`PREDICTOR_ARTIFACT`, as `MLmodel` records it). `readable_store` turns a corrupt tracking
database or an unreachable server into one `RegistryUnavailable` line.
"""
from __future__ import annotations

import contextlib
import hashlib
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from features.errors import LeadscoreError
from training.tracking import mlflow_client, tracking_uri

if TYPE_CHECKING:
    from training.predictor import LeadScorePredictor

ARTIFACTS_TAG = "leadscore.artifacts_sha256"  # on a version: sha256 of its model files, set at registration
NOT_HASHED = frozenset({"registered_model_meta"})  # MLflow writes it (name, version) when a version is fetched
PREDICTOR_ARTIFACT = "predictor"  # the pyfunc model's artifact holding the pickled LeadScorePredictor


class ArtifactsCorrupt(LeadscoreError, ValueError):
    """A registered version whose model files are missing, altered or cannot be loaded."""


class RegistryUnavailable(LeadscoreError, OSError):
    """The tracking store cannot be read (a corrupt database, a server that does not answer)."""


@contextlib.contextmanager
def readable_store() -> Iterator[None]:
    """Store failures (a corrupt mlflow.db, an unreachable server) as one RegistryUnavailable line."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except LeadscoreError:
        raise
    except (SQLAlchemyError, MlflowException, OSError) as exc:
        if isinstance(exc, MlflowException) and exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise
        detail = " ".join(str(exc).split("\n")[0].split())[:300]
        raise RegistryUnavailable(f"the model registry at {tracking_uri()} cannot be read: {detail}") from None


def artifacts_digest(folder: str | Path) -> str:
    """sha256 over a model folder: every file's relative path and bytes, in path order
    (MLflow's own `registered_model_meta` left out)."""
    root = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.relative_to(root).as_posix() not in NOT_HASHED):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def local_artifacts(model_uri: str) -> Path:
    """A local folder holding the model at `model_uri` (the folder itself for a local store)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))


def verified_artifacts(model_name: str, version: int) -> Path:
    """The local folder of a version's model after checking its files against the sha256
    recorded at registration; ArtifactsCorrupt (one line) when missing or altered."""
    label = f"{model_name} v{version}"
    with readable_store():
        expected = (mlflow_client().get_model_version(model_name, str(version)).tags or {}).get(ARTIFACTS_TAG)
    try:
        folder = local_artifacts(f"models:/{model_name}/{int(version)}")
        found = artifacts_digest(folder) if folder.is_dir() else None
    except Exception as exc:  # noqa: BLE001 - any failure to fetch the files is the same refusal
        detail = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        state = "are missing" if isinstance(exc, FileNotFoundError) or "No such" in str(exc) else "cannot be read"
        raise ArtifactsCorrupt(f"the model files of {label} {state} ({detail}); promote another version "
                               f"(`leadscore rollback`) or retrain") from None
    if found is None or not any(folder.iterdir()):
        raise ArtifactsCorrupt(f"the model files of {label} are missing ({folder}); promote another version "
                               f"(`leadscore rollback`) or retrain")
    if expected and found != expected:
        raise ArtifactsCorrupt(f"the model files of {label} do not match the sha256 recorded at registration "
                               f"({found[:12]}... vs {expected[:12]}...): altered or truncated; promote another "
                               f"version (`leadscore rollback`) or retrain")
    return folder


def read_predictor(folder: Path, label: str) -> LeadScorePredictor:
    """The LeadScorePredictor pickled in a checked model folder (the pyfunc model's artifact
    `PREDICTOR_ARTIFACT`, where `MLmodel` records it), unpickled; ArtifactsCorrupt (one line)
    when the model has no such artifact, it does not unpickle or it holds something else."""
    import yaml

    from training.predictor import LeadScorePredictor

    refused, advice = f"{label} does not load", "promote another version or retrain"
    try:
        conf = yaml.safe_load((folder / "MLmodel").read_text())
        try:
            path = folder / conf["flavors"]["python_function"]["artifacts"][PREDICTOR_ARTIFACT]["path"]
        except (KeyError, TypeError):
            raise ArtifactsCorrupt(f"{refused} (its model has no '{PREDICTOR_ARTIFACT}' artifact: it is no "
                                   f"leadscore predictor); {advice}") from None
        with open(path, "rb") as handle:
            predictor = pickle.load(handle)
    except ArtifactsCorrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - a model that does not load is refused in one line
        raise ArtifactsCorrupt(f"{refused} ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); "
                               f"{advice}") from None
    if not isinstance(predictor, LeadScorePredictor):
        raise ArtifactsCorrupt(f"{refused} (it holds a {type(predictor).__name__}, not a LeadScorePredictor); {advice}")
    return predictor

"""`leadscore retrain`: ingest the latest export, train, gate; idempotent and safe from cron.

One run, under an exclusive lock beside the dataset folder (`.DIR.retrain.lock`, dropped by
the system even when the holder is killed): ingest the export the mapping names into DIR
(continuing the dataset already there, `ingest --append` semantics), fingerprint the
canonical tables, and stop there when a registered version of the model was already trained
on exactly these tables (same export twice: no new version). Otherwise train, register and
gate as `leadscore train` does: a challenger the gate refuses leaves the champion serving.

Outcomes and the exit codes the CLI gives them (`RetrainResult.exit_code`):
0 promoted, 0 unchanged (the champion already has this data), 3 refused by the gate (or this
data's version was refused before), 4 busy (another retrain holds the lock: nothing done);
bad input (mapping, data, settings) is a LeadscoreError, exit code 2, before any long step.
"""
from __future__ import annotations

import contextlib
import fcntl
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from training import registry, tracking

EXIT_CODES = {"promoted": 0, "unchanged": 0, "refused": 3, "busy": 4}


@dataclass(frozen=True)
class RetrainResult:
    status: str  # promoted | unchanged | refused | busy
    message: str
    version: int | None = None
    summary: dict | None = None  # the training summary (metrics, gate) when a model was trained

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]


def lock_path(data_dir: str | Path) -> Path:
    folder = Path(data_dir).resolve()
    return folder.parent / f".{folder.name}.retrain.lock"


@contextlib.contextmanager
def retrain_lock(data_dir: str | Path) -> Iterator[bool]:
    """Yields True when this process holds the dataset's retrain lock, False when another does."""
    path = lock_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def version_trained_on(model_name: str, data_sha256: str) -> tuple[int, str] | None:
    """(version, gate alias) of the newest version trained on tables with this fingerprint."""
    from mlflow.exceptions import MlflowException

    with registry.readable_store():
        try:
            versions = tracking.mlflow_client().search_model_versions(f"name = '{model_name}'")
        except MlflowException:
            return None
    same = [v for v in versions if (v.tags or {}).get("leadscore.data_sha256") == data_sha256]
    if not same:
        return None
    newest = max(same, key=lambda v: int(v.version))
    return int(newest.version), (newest.tags or {}).get(registry.GATE_TAG, "none")


def retrain(mapping: str | Path, data_dir: str | Path, model_name: str = "leadscore",
            experiment: str = "leadscore", step: Callable[[str], None] = lambda _s: None) -> RetrainResult:
    """Ingest, then train and gate unless these tables were trained on already (see the module)."""
    from features.dataset import read_dataset, read_truth
    from features.sources import ingest
    from training.run import train

    with retrain_lock(data_dir) as held:
        if not held:
            return RetrainResult("busy", f"another retrain of {data_dir} is running (lock {lock_path(data_dir)}): "
                                         f"nothing done")
        append = (Path(data_dir) / "deals.parquet").exists()
        step("ingest" + (" (appended to the dataset)" if append else ""))
        ingest(mapping_path=mapping, out_dir=data_dir, append=append)
        data = read_dataset(data_dir)
        fingerprint = tracking.data_fingerprint({"deals": data.deals, "stage_events": data.stage_events,
                                                 "activities": data.activities})["data_sha256"]
        seen = version_trained_on(model_name, str(fingerprint))
        champion = registry.champion_version(model_name)
        if seen is not None:
            version, alias = seen
            if version == champion or alias == registry.CHAMPION:
                return RetrainResult("unchanged", f"unchanged: {model_name} v{version} was already trained on "
                                                  f"this data (champion v{champion}); no new version", version)
            return RetrainResult("refused", f"unchanged: {model_name} v{version} was already trained on this data "
                                            f"and the gate refused it; champion v{champion} keeps serving", version)
        summary = train(data, read_truth(data_dir), experiment=experiment, model_name=model_name, step=step,
                        data_dir=data_dir)
    version, reason = int(summary["model_version"]), summary["gate_reason"]
    if summary["alias"] == registry.CHAMPION:
        return RetrainResult("promoted", f"promoted: {model_name} v{version} is the champion ({reason})", version,
                             summary)
    return RetrainResult("refused", f"refused by the gate: {model_name} v{version} is the challenger; champion "
                                    f"v{champion} keeps serving ({reason})", version, summary)

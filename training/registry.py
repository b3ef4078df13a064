"""The model registry: aliases, promote, rollback, loading a version, and the check that
a model and a dataset belong together.

A registered model has two aliases: `champion` (what serving loads) and `challenger`
(the last version the gate refused). Every move of `champion` happens under the registry
lock (`tracking.registry_lock`) after re-reading the alias, and is logged with both
versions, the time and the reason (`leadscore.champion_log`); the order in which versions
held it is kept for `rollback`. Each version records the dataset it was trained on
(name, stages, attributes, fingerprint); `check_model_data` refuses a model and data that
do not belong together. `load_predictor` is the one way a registered predictor is loaded:
it checks the version's artifacts against the sha256 recorded when it was registered
(`training.artifacts`) and refuses a truncated, deleted or altered model in
one line (`ArtifactsCorrupt`); an unreadable store is one line too (`RegistryUnavailable`).
The promotion gate (register a version, judge it, move the alias) is `training.gate`.
`find_version` returns what loading a version needs as plain values (`RegisteredVersion`),
so a command can ask MLflow in another process. Over 300 lines: finding and loading a
version share the aliases and the dataset check with promote and rollback.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from features.errors import LeadscoreError
from features.schema import DatasetMeta
from training.artifacts import read_predictor, readable_store, verified_artifacts
from training.tracking import mlflow_client, registry_lock

if TYPE_CHECKING:
    from training.predictor import LeadScorePredictor

CHAMPION = "champion"
CHALLENGER = "challenger"
GATE_TAG = "leadscore.gate"  # on a version: the gate's alias; absent when no gate decision was made
HISTORY_TAG = "leadscore.champion_history"  # JSON list of versions, oldest first (for rollback)
LOG_TAG = "leadscore.champion_log"  # JSON list of {version, replaced, at, by, reason}, oldest first
PROMOTION_TAG = "leadscore.promotion"  # on a version: its latest log entry
HISTORY_LIMIT = 100
LOG_MAX_CHARS = 8000  # the oldest entries go first; each version keeps its own entry
DATASET_TAGS = ("leadscore.dataset", "leadscore.stages", "leadscore.attributes", "leadscore.static")
NO_CHAMPION = "no champion model registered; run `leadscore train`"


class NoChampion(LeadscoreError, LookupError):
    """No version of the model holds the `champion` alias."""


class RegistryError(LeadscoreError, ValueError):
    """A version, promotion or rollback that the registry state does not allow."""


class ModelDataMismatch(RegistryError):
    """A model and a dataset that do not belong together (other stages or attributes)."""


# --- model-data identity ----------------------------------------------------------------

def dataset_tags(meta: DatasetMeta, data_sha256: str = "") -> dict[str, str]:
    """What a version records about its training data (registered with the version)."""
    return {"leadscore.dataset": meta.name, "leadscore.stages": json.dumps(list(meta.stages)),
            "leadscore.attributes": json.dumps(dict(sorted(meta.attributes.items()))),
            "leadscore.static": str(bool(meta.static)).lower(), "leadscore.data_sha256": data_sha256}


def recorded_dataset(tags: dict) -> DatasetMeta | None:
    """The dataset a version's tags (`dataset_tags`) describe; None when not recorded."""
    if not all(key in tags for key in DATASET_TAGS):
        return None  # registered before versions recorded their dataset: nothing to compare
    return DatasetMeta(stages=json.loads(tags["leadscore.stages"]), attributes=json.loads(tags["leadscore.attributes"]),
                       static=tags["leadscore.static"] == "true", name=tags["leadscore.dataset"])


def dataset_difference(model: DatasetMeta, data: DatasetMeta) -> str | None:
    """How two datasets differ in what a model depends on (None: the same dataset)."""
    if model.static != data.static:
        return "one is a static lead export, the other has dates"
    if list(model.stages) != list(data.stages):
        return f"stages {list(model.stages)} vs {list(data.stages)}"
    if dict(model.attributes) != dict(data.attributes):
        gone = sorted(set(model.attributes) - set(data.attributes))
        new = sorted(set(data.attributes) - set(model.attributes))
        shared = set(model.attributes) & set(data.attributes)
        kinds = sorted(k for k in shared if model.attributes[k] != data.attributes[k])
        parts = [f"{label}: {', '.join(names[:6])}{' ...' if len(names) > 6 else ''}"
                 for label, names in (("missing", gone), ("not in the model", new), ("other kind", kinds)) if names]
        return "attributes differ (" + "; ".join(parts) + ")"
    return None


def check_model_data(model_name: str, version: int | None, data: DatasetMeta, data_label: str,
                     recorded: DatasetMeta | None = None) -> int | None:
    """Refuse (ModelDataMismatch, one line naming both) a model and data that do not
    belong together: other stage order, attribute set or kind. A new fingerprint of the
    same dataset is fine (new data). `recorded`: the model's own dataset meta (a loaded
    predictor's); by default read from the version's tags (`version` None: the champion).
    Returns the version checked (None when only `recorded` was given)."""
    if recorded is None:
        version = version if version is not None else require_champion(model_name)
        recorded = recorded_dataset(_check_version(mlflow_client(), model_name, int(version)).tags or {})
    differs = None if recorded is None else dataset_difference(recorded, data)
    if differs:
        label = f"{model_name} v{version}" if version is not None else model_name
        raise ModelDataMismatch(
            f"model '{label}' was trained on dataset '{recorded.name}' and {data_label} holds dataset "
            f"'{data.name}': they do not belong together ({differs}); use a model trained on this data "
            f"(`--model-name`)")
    return version


def check_training_target(model_name: str, data: DatasetMeta, data_label: str, new_dataset: bool = False) -> None:
    """Refuse training `data` into a model name whose champion (or, without one, latest
    version) was trained on another dataset, unless `new_dataset`."""
    client = mlflow_client()
    version = _alias_version(client, model_name, CHAMPION) or max(_versions_or_empty(client, model_name), default=None)
    if version is None or new_dataset:
        return
    try:
        check_model_data(model_name, version, data, data_label)
    except ModelDataMismatch as exc:
        raise ModelDataMismatch(f"{exc}; to train it into '{model_name}' anyway pass --new-dataset") from None


# --- moving the champion --------------------------------------------------------------------

def move_champion(client, model_name: str, version: int, expected: int | None, by: str, reason: str) -> None:
    """Compare-and-set `champion` (caller holds the registry lock): refuse when it no longer
    holds `expected`; log who replaced whom, when and why."""
    current = _alias_version(client, model_name, CHAMPION)
    if current != expected:
        raise RegistryError(f"champion of '{model_name}' moved from v{expected} to v{current} meanwhile; "
                            f"nothing changed: run the promotion again")
    client.set_registered_model_alias(model_name, CHAMPION, str(version))
    entry = {"version": version, "replaced": current, "at": pd.Timestamp.now(tz="UTC").isoformat(),
             "by": by, "reason": reason[:300]}
    client.set_model_version_tag(model_name, str(version), PROMOTION_TAG, json.dumps(entry))
    if by != "rollback":
        history = _history(client, model_name)
        history = history if history and history[-1] == version else [*history, version]
        client.set_registered_model_tag(model_name, HISTORY_TAG, json.dumps(history[-HISTORY_LIMIT:]))
    log = [*champion_log(model_name, client), entry]
    while len(json.dumps(log)) > LOG_MAX_CHARS and len(log) > 1:
        log.pop(0)
    client.set_registered_model_tag(model_name, LOG_TAG, json.dumps(log))


def champion_log(model_name: str, client=None) -> list[dict]:
    """Every move of `champion` still in the log, oldest first: {version, replaced, at, by, reason}."""
    tags = (client or mlflow_client()).get_registered_model(model_name).tags or {}
    return json.loads(tags.get(LOG_TAG, "[]"))


def _alias_version(client, model_name: str, alias: str) -> int | None:
    from mlflow.exceptions import MlflowException

    try:
        return int(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


def _history(client, model_name: str) -> list[int]:
    tags = client.get_registered_model(model_name).tags or {}
    return [int(v) for v in json.loads(tags.get(HISTORY_TAG, "[]"))]


def _versions(client, model_name: str) -> list[int]:
    return sorted(int(v.version) for v in client.search_model_versions(f"name = '{model_name}'"))


def promote(model_name: str, version: int, force: bool = False) -> int:
    """Make `version` the champion by hand (logged, and it joins the rollback history).
    Refused, unless `force` (which is logged), when the version has not passed the gate
    (no gate decision, e.g. its run was killed after registration, or the gate refused it)
    or was trained on another dataset than the current champion."""
    client = mlflow_client()
    version = int(version)
    _check_version(client, model_name, version)
    with registry_lock():
        current = _alias_version(client, model_name, CHAMPION)
        if current == version:
            return version
        problems = _promotion_problems(client, model_name, version, current)
        if problems and not force:
            raise RegistryError(f"{model_name} v{version} cannot be promoted: {'; '.join(problems)}; "
                                f"promote it anyway with `leadscore promote {version} --force`")
        reason = f"by hand with --force ({'; '.join(problems)})" if problems else "by hand"
        move_champion(client, model_name, version, current, "promote --force" if force else "promote", reason)
    return version


def _promotion_problems(client, model_name: str, version: int, current: int | None) -> list[str]:
    tags = client.get_model_version(model_name, str(version)).tags or {}
    problems = []
    if GATE_TAG not in tags:
        problems.append("it has no gate decision (its run stopped after registration)")
    elif tags[GATE_TAG] != CHAMPION:
        problems.append(f"the gate refused it ({tags.get('leadscore.gate_reason', tags[GATE_TAG])[:300]})")
    if current is not None:
        ours = recorded_dataset(tags)
        theirs = recorded_dataset(client.get_model_version(model_name, str(current)).tags or {})
        differs = None if ours is None or theirs is None else dataset_difference(theirs, ours)
        if differs:
            problems.append(f"it was trained on dataset '{ours.name}', champion v{current} on '{theirs.name}' "
                            f"({differs})")
    return problems


def _check_version(client, model_name: str, version: int):
    """The registered `version`'s record (MLflow's ModelVersion); RegistryError naming the
    existing versions when it is not registered."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(model_name, str(version))
    except MlflowException:
        known = ", ".join(map(str, _versions_or_empty(client, model_name))) or "none"
        raise RegistryError(f"model '{model_name}' has no version {version} (versions: {known}); "
                            f"see them with `mlflow models` or the MLflow UI") from None


def _versions_or_empty(client, model_name: str) -> list[int]:
    from mlflow.exceptions import MlflowException

    try:
        return _versions(client, model_name)
    except MlflowException:
        return []


def rollback(model_name: str) -> int:
    """Give `champion` back to the version that held it before the current one."""
    client = mlflow_client()
    current = _alias_version(client, model_name, CHAMPION)
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
    with registry_lock():
        move_champion(client, model_name, previous, current, "rollback", f"rolled back from v{current}")
        client.set_registered_model_tag(model_name, HISTORY_TAG, json.dumps(history))
    return previous


def champion_version(model_name: str) -> int | None:
    """The version holding `champion`, or None."""
    return alias_version(model_name, CHAMPION)


def alias_version(model_name: str, alias: str) -> int | None:
    """The version holding `alias`, or None (also when the model is not registered)."""
    return _alias_version(mlflow_client(), model_name, alias)


def require_champion(model_name: str) -> int:
    """The champion's version; NoChampion (one line, says what to run) when there is none,
    RegistryUnavailable when the store cannot be read."""
    with readable_store():
        version = champion_version(model_name)
    if version is None:
        raise NoChampion(NO_CHAMPION)
    return version


@dataclass(frozen=True)
class RegisteredVersion:
    """A registered version found and its files checked (`find_version`): what loading it
    needs from MLflow, as plain values (a command can look it up in another process)."""

    model_name: str
    version: int
    folder: Path  # its model files, checked against their sha256
    dataset: DatasetMeta | None  # the dataset it was trained on (None: not recorded)

    def check_data(self, data: DatasetMeta, data_label: str) -> None:
        """ModelDataMismatch (one line) when `data` is another dataset than the version's own."""
        if self.dataset is not None:
            check_model_data(self.model_name, self.version, data, data_label, recorded=self.dataset)

    def load(self) -> LeadScorePredictor:
        """The predictor, unpickled straight from the checked files (`artifacts.read_predictor`)."""
        return read_predictor(self.folder, f"{self.model_name} v{self.version}")


def find_version(model_name: str, version: int | None = None, alias: str = CHAMPION) -> RegisteredVersion:
    """Registered `version`, or the version holding `alias` when no version is given, with its
    files checked (`verified_artifacts`) and the dataset it records. NoChampion / RegistryError
    when there is none, ArtifactsCorrupt when its files are missing or altered."""
    with readable_store():
        if version is None:
            version = require_champion(model_name) if alias == CHAMPION else alias_version(model_name, alias)
            if version is None:
                raise RegistryError(f"no version of model '{model_name}' holds the alias '{alias}'")
        tags = _check_version(mlflow_client(), model_name, int(version)).tags or {}
    return RegisteredVersion(model_name, int(version), verified_artifacts(model_name, int(version)),
                             recorded_dataset(tags))


def load_predictor(model_name: str, version: int | None = None, alias: str = CHAMPION) -> tuple[LeadScorePredictor, int]:
    """(LeadScorePredictor, version) of `find_version`'s version, unpickled straight from its
    checked files: the object `mlflow.pyfunc.load_model(...)` would wrap, without the pyfunc
    wrapper (a second, compiled copy) or MLflow's environment checks (seconds of a command)."""
    found = find_version(model_name, version, alias)
    return found.load(), found.version

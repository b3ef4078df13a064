"""The model registry: the promotion gate, promote, rollback, and loading a version.

A registered model has two aliases: `champion` (what serving loads) and `challenger`
(the last version the gate refused). The order in which versions held `champion` is
kept in a registered-model tag, so `rollback` knows what came before. `load_predictor`
is the one way a registered predictor is loaded (CLI, evaluate, score, forecast, the
service and the gate's re-scoring of the champion).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable

from features.errors import LeadscoreError
from training.tracking import mlflow_client, tracking_uri

if TYPE_CHECKING:
    from training.predictor import LeadScorePredictor

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_TAG = "leadscore.champion_history"  # JSON list of versions, oldest first
HISTORY_LIMIT = 100  # MLflow tag values are capped at a few kB
NO_CHAMPION = "no champion model registered; run `leadscore train`"


class NoChampion(LeadscoreError, LookupError):
    """No version of the model holds the `champion` alias."""


class RegistryError(LeadscoreError, ValueError):
    """A version, promotion or rollback that the registry state does not allow."""


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


def _alias_version(client, model_name: str, alias: str) -> int | None:
    from mlflow.exceptions import MlflowException

    try:
        return int(client.get_model_version_by_alias(model_name, alias).version)
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
    client = mlflow_client()
    uri = model_uri or _logged_model_uri(client, run_id, artifact_path)
    version = int(mlflow.register_model(uri, model_name, tags={"leadscore.run_id": run_id}).version)
    candidate = _finite(candidate_score)
    champion_version = _alias_version(client, model_name, CHAMPION)
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
    client = mlflow_client()
    _check_version(client, model_name, int(version))
    _set_champion(client, model_name, int(version))
    return int(version)


def _check_version(client, model_name: str, version: int) -> None:
    """RegistryError naming the existing versions when `version` is not registered."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_model_version(model_name, str(version))
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
    client.set_registered_model_alias(model_name, CHAMPION, str(previous))
    client.set_registered_model_tag(model_name, HISTORY_TAG, json.dumps(history))
    return previous


def champion_version(model_name: str) -> int | None:
    """The version holding `champion`, or None."""
    return alias_version(model_name, CHAMPION)


def alias_version(model_name: str, alias: str) -> int | None:
    """The version holding `alias`, or None (also when the model is not registered)."""
    return _alias_version(mlflow_client(), model_name, alias)


def require_champion(model_name: str) -> int:
    """The champion's version; NoChampion (one line, says what to run) when there is none."""
    version = champion_version(model_name)
    if version is None:
        raise NoChampion(NO_CHAMPION)
    return version


def load_predictor(model_name: str, version: int | None = None, alias: str = CHAMPION) -> tuple[LeadScorePredictor, int]:
    """(LeadScorePredictor, version) of registered `version`, or of the version holding
    `alias` when no version is given. NoChampion / RegistryError when there is none."""
    import mlflow

    from training.pyfunc import unwrap

    if version is None:
        version = require_champion(model_name) if alias == CHAMPION else alias_version(model_name, alias)
        if version is None:
            raise RegistryError(f"no version of model '{model_name}' holds the alias '{alias}'")
    _check_version(mlflow_client(), model_name, int(version))
    mlflow.set_tracking_uri(tracking_uri())
    return unwrap(mlflow.pyfunc.load_model(f"models:/{model_name}/{int(version)}")), int(version)

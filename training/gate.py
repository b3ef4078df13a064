"""The promotion gate: register a version, judge it, and give it its alias.

A candidate must first show skill on its own test fold: a paired test on per-row Brier
differences against the training base rate and against the stage baseline (as the
no-signal guard in training does). Only then is it compared with the champion, on the
candidate's test rows scored by each model from its own inputs. Before the comparison
counts, the labels are checked for sanity: when the champion's own AUC collapses on the
new labels, or the label rate jumps, the labels are suspect and nothing is promoted.
`register_and_gate` does all of it under the registry lock, so two gates running at
once judge one after the other, each against the champion the other left.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import pandas as pd

from training.artifacts import ARTIFACTS_TAG, artifacts_digest, local_artifacts
from training.registry import (
    CHALLENGER,
    CHAMPION,
    GATE_TAG,
    alias_version,
    dataset_difference,
    move_champion,
    recorded_dataset,
)
from training.tracking import mlflow_client, registry_lock, tracking_uri

MIN_SKILL_Z = 2.0  # one-sided paired z on per-row Brier gains: the candidate must beat each reference by this
AUC_KEEP_SHARE = 1 / 3  # labels are suspect when the champion keeps less than this of its AUC above chance
MIN_RECORDED_AUC = 0.6  # below it the champion had too little skill for its collapse to say anything
LABEL_RATE_JUMP = 0.15  # ... or when the label rate moves by more than this (absolute) and by half of itself


@dataclass(frozen=True)
class HoldoutScore:
    """A model's scores on a holdout: Brier, AUC and the rate of positive labels."""

    brier: float | None
    auc: float | None = None
    label_rate: float | None = None


def paired_skill_z(y: np.ndarray, p_model: np.ndarray, p_reference: np.ndarray) -> float:
    """Mean per-row Brier gain of the model over a reference, in standard errors
    (positive: the model is better). 0 when the two predict the same everywhere."""
    y, p_model, p_reference = (np.asarray(a, dtype="float64") for a in (y, p_model, p_reference))
    gain = (p_reference - y) ** 2 - (p_model - y) ** 2
    if gain.size < 2 or not np.any(gain):
        return 0.0
    return float(gain.mean() / (gain.std(ddof=1) / np.sqrt(gain.size) + 1e-12))


def skill_report(y: np.ndarray, p_model: np.ndarray, base_rate: float,
                 p_stage: np.ndarray | None = None) -> dict:
    """Paired z of the model against the training base rate and (when given) the stage
    baseline on the same test rows; `stage_rate` None when the model is that baseline."""
    y = np.asarray(y, dtype="float64")
    out = {"n": int(y.size), "min_z": MIN_SKILL_Z,
           "z_vs_base_rate": paired_skill_z(y, p_model, np.full(y.size, float(base_rate))),
           "z_vs_stage_rate": None if p_stage is None else paired_skill_z(y, p_model, p_stage)}
    return out


def lacks_skill(skill: dict) -> str | None:
    """Why the candidate shows no skill on its own test fold, or None when it does."""
    min_z = float(skill.get("min_z", MIN_SKILL_Z))
    for reference in ("base_rate", "stage_rate"):
        z = skill.get(f"z_vs_{reference}")
        if z is not None and not z >= min_z:
            return (f"no skill on its own test fold: its Brier beats the {reference.replace('_', ' ')} by "
                    f"{z:.2f} standard errors on {skill.get('n', 0):,} rows (needs {min_z:g})")
    return None


def labels_look_corrupted(champion_now: HoldoutScore, champion_recorded: HoldoutScore,
                          champion_version: int) -> str | None:
    """Why the new labels look corrupted, judged by the champion on them, or None."""
    now, then = champion_now.auc, champion_recorded.auc
    if now is not None and then is not None and then >= MIN_RECORDED_AUC:
        if now - 0.5 < (then - 0.5) * AUC_KEEP_SHARE:
            return (f"labels look corrupted: champion v{champion_version} has AUC {now:.3f} on the new labels "
                    f"against {then:.3f} on its own test fold")
    rate_now, rate_then = champion_now.label_rate, champion_recorded.label_rate
    if rate_now is not None and rate_then is not None:
        jump = abs(rate_now - rate_then)
        if jump > LABEL_RATE_JUMP and jump > rate_then / 2:
            return (f"labels look corrupted: the won rate of the test rows is {rate_now:.3f} against "
                    f"{rate_then:.3f} when champion v{champion_version} was trained")
    return None


def compare_brier(candidate: float | None, champion: float | None, champion_version: int,
                  tolerance: float) -> tuple[bool, str]:
    """(promote?, why) for the candidate's Brier against the champion's on the same rows."""
    if candidate is None:
        return False, "candidate has no brier on the holdout"
    if champion is None:
        return False, (f"champion v{champion_version} has no brier on this holdout to compare with "
                       f"(not counted as a loss for it)")
    if champion - candidate >= -tolerance:
        return True, (f"brier {candidate:.6g} vs champion v{champion_version} {champion:.6g} "
                      f"(lower is better): not worse")
    return False, (f"brier {candidate:.6g} is worse than champion v{champion_version} {champion:.6g} "
                   f"on the same holdout (lower is better, tolerance {tolerance:g})")


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


def register_and_gate(run_id: str, artifact_path: str, model_name: str, *, candidate: HoldoutScore,
                      skill: dict | None = None, compare_fn: Callable[[int], HoldoutScore | None] | None = None,
                      tags: dict[str, str] | None = None, tolerance: float = 0.0, model_uri: str | None = None,
                      promote_if_incomparable: bool = False) -> GateDecision:
    """Register the model logged by `run_id` at `artifact_path` as a new version of
    `model_name` (with `tags`, e.g. `dataset_tags`), then decide its alias under the
    registry lock.

    It must first show skill on its own test fold (`skill`, from `gate.skill_report`).
    Then it becomes `champion` when there is none, or when its Brier is at most
    `tolerance` worse than the champion's on the same holdout: `compare_fn(champion_version)`
    scores the champion there from its own inputs (without it, the Brier recorded when the
    champion was registered is used). A champion trained on another dataset, or one that
    cannot score the holdout (compare_fn raised or returned None), is not compared and not
    counted as a loss: the candidate becomes `challenger` unless `promote_if_incomparable`.
    Labels on which the champion's own AUC collapses (or whose rate jumps) are refused as
    corrupted. The reason is tagged on the version and the run and returned. `model_uri`
    (the `ModelInfo.model_uri` of `log_model`) skips MLflow's lookup of the artifact path.
    """
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    client = mlflow_client()
    uri = model_uri or _logged_model_uri(client, run_id, artifact_path)
    # the checksum is part of the version from its creation: serving refuses files that differ
    checksum = {ARTIFACTS_TAG: artifacts_digest(local_artifacts(uri))}
    with registry_lock():
        version = int(mlflow.register_model(uri, model_name,
                                            tags={"leadscore.run_id": run_id, **checksum, **(tags or {})}).version)
        champion_version = alias_version(model_name, CHAMPION)
        promote_it, reason, champion = _verdict(client, model_name, candidate, skill, champion_version, tags or {},
                                                compare_fn, tolerance, promote_if_incomparable)
        decision = GateDecision(version=version, alias=CHAMPION if promote_it else CHALLENGER, reason=reason,
                                candidate=candidate.brier, champion=champion, champion_version=champion_version)
        _record_decision(client, model_name, run_id, decision, candidate, skill)
    return decision


def _verdict(client, model_name: str, candidate: HoldoutScore, skill: dict | None, champion_version: int | None,
             tags: dict, compare_fn, tolerance: float, promote_if_incomparable: bool) -> tuple[bool, str, float | None]:
    """(promote?, why, the champion's Brier on the holdout)."""
    no_skill = lacks_skill(skill) if skill else None
    if no_skill:
        return False, (f"{no_skill}; not compared with the champion "
                       f"(`leadscore promote VERSION --force` overrides)"), None
    if champion_version is None:
        return True, "no champion yet", None
    champion_tags = client.get_model_version(model_name, str(champion_version)).tags or {}
    ours, theirs = recorded_dataset(tags), recorded_dataset(champion_tags)
    differs = None if ours is None or theirs is None else dataset_difference(theirs, ours)
    if differs:
        return False, (f"champion v{champion_version} was trained on dataset '{theirs.name}' ({differs}): "
                       f"not compared; promote by hand with `leadscore promote VERSION --force`"), None
    now, note = _score_champion(champion_tags, champion_version, compare_fn)
    if now is None or now.brier is None:
        if promote_if_incomparable:
            return True, f"champion v{champion_version} has no brier on this holdout: not comparable ({note})", None
        return False, (f"champion v{champion_version} cannot be scored on this holdout ({note}); not counted as a "
                       f"loss for it: promote by hand with `leadscore promote VERSION --force` if the candidate "
                       f"is better"), None
    corrupted = labels_look_corrupted(HoldoutScore(now.brier, now.auc, candidate.label_rate),
                                      _recorded_score(champion_tags), champion_version)
    if corrupted:
        return False, f"{corrupted}: refused (check the outcomes of this data)", now.brier
    promote_it, reason = compare_brier(candidate.brier, now.brier, champion_version, tolerance)
    return promote_it, f"{reason}; {note}" if note else reason, now.brier


def _recorded_score(tags: dict) -> HoldoutScore:
    def number(key: str) -> float | None:
        value = pd.to_numeric(tags.get(f"leadscore.holdout.{key}"), errors="coerce")
        return None if pd.isna(value) else float(value)

    return HoldoutScore(number("brier"), number("auc"), number("label_rate"))


def _score_champion(champion_tags: dict, version: int, compare_fn) -> tuple[HoldoutScore | None, str]:
    """The champion's score on the candidate's holdout, plus a note when it is not that."""
    if compare_fn is None:
        recorded = _recorded_score(champion_tags)
        return HoldoutScore(recorded.brier), "champion score as recorded at its own registration, not re-scored"
    try:
        score = compare_fn(version)
    except Exception as exc:  # noqa: BLE001 - an old champion that cannot score new data
        return None, f"{type(exc).__name__}: {exc}"
    return score, "" if score is not None else "its inputs are missing from this data"


def _logged_model_uri(client, run_id: str, artifact_path: str) -> str:
    """`models:/<model_id>` of the model the run logged under `artifact_path` (MLflow 3
    keeps logged models outside the run's artifacts); `runs:/` for older layouts."""
    experiment_id = client.get_run(run_id).info.experiment_id
    found = client.search_logged_models(
        experiment_ids=[experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND name = '{artifact_path}'", max_results=1)
    return found[0].model_uri if found else f"runs:/{run_id}/{artifact_path}"


def _record_decision(client, model_name: str, run_id: str, decision: GateDecision, candidate: HoldoutScore,
                     skill: dict | None) -> None:
    """Scores and skill on the version, the decision on version and run, then the alias
    (the gate tag goes last but one: a version without it never passed the gate)."""
    version = str(decision.version)
    for key, value in {**asdict(candidate), **{k: v for k, v in (skill or {}).items() if k.startswith("z_")}}.items():
        if value is not None:
            client.set_model_version_tag(model_name, version, f"leadscore.holdout.{key}", repr(float(value)))
    client.set_model_version_tag(model_name, version, "leadscore.gate_reason", decision.reason[:4000])
    client.set_tag(run_id, "leadscore.model_version", version)
    client.set_tag(run_id, "leadscore.gate", decision.alias)
    client.set_tag(run_id, "leadscore.gate_reason", decision.reason[:4000])
    client.set_model_version_tag(model_name, version, GATE_TAG, decision.alias)
    if decision.alias == CHAMPION:
        move_champion(client, model_name, decision.version, decision.champion_version, "gate", decision.reason)
    else:
        client.set_registered_model_alias(model_name, CHALLENGER, version)

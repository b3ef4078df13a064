"""What `leadscore train` / `evaluate` call: fit, evaluate, log one MLflow run, register, gate.

Stages hand each other plain dicts; the run id and the registry decision are part of
the result so scripts and the notebook can chain on them.
"""
from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Callable

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from features.build import FeatureBuilder
from features.history_cut import HistoryCutError
from features.schema import CanonicalData
from training import evaluate as ev
from training import gate, plots, registry, tracking
from training.forget import log_training_ids
from training.monitoring.reference import build_reference, deal_features, log_reference
from training.oracle_eval import creation_time_metrics, oracle_test_metrics
from training.pyfunc import log_predictor
from training.train import TrainConfig, TrainResult, fit_predictor

MODEL_NAME = "leadscore"
BASELINES = ("stage_rate", "naive_bayes", "logistic")


def train(data: CanonicalData, truth: pd.DataFrame | None = None, experiment: str = "leadscore",
          model_name: str = MODEL_NAME, config: TrainConfig | None = None,
          step: Callable[[str], None] = lambda _s: None, data_dir: str | Path = "", new_dataset: bool = False,
          fingerprint: dict | None = None, training_ids: np.ndarray | None = None, cut_for_serving: bool = False
          ) -> dict:
    """Train on the canonical tables, log one MLflow run (`data_dir`: where they were read,
    logged as a parameter), register the predictor and run the promotion gate. Training
    another dataset into an existing `model_name` is refused unless `new_dataset`. When `data`
    is a sample of the deals (`train --cluster`), `fingerprint` and `training_ids` are the
    whole data's (`training.distributed_sample.DealSample`); else they come from `data`.
    `cut_for_serving`: the registered predictor keeps only the history that as-of dates from its
    out-of-sample start on read (`cut_history_for_serving`: ~60 % of the history rows; the 1M-deal
    model pickles to 240 MiB, ~2.3 GiB extrapolated at 10M against 3.75 GiB of full history), said in its `info["history_from"]`; it refuses earlier as-of dates in one line."""
    registry.check_training_target(model_name, data.meta, str(data_dir or data.meta.name), new_dataset)
    result = fit_predictor(data, config, step)
    step("ground-truth comparison")
    add_truth_metrics(result, data, truth)
    if cut_for_serving:
        cut_history_for_serving(result, data.data_end)
    step("MLflow run and registry")
    return log_run(result, data, experiment, model_name, data_dir, fingerprint, training_ids)


def add_truth_metrics(result: TrainResult, data: CanonicalData, truth: pd.DataFrame | None) -> None:
    """Model at creation time (always) and the generator's oracles (when truth exists)."""
    cp = result.metrics["close_probability"]
    if result.folds is not None:
        test_start, data_end = result.folds.test_start, data.data_end
        # creation-time snapshots of deals created in the test window, labels as of data end
        cp["at_creation"] = creation_time_metrics(result.predictor, data, truth, test_start, data_end)
    if truth is not None and result.folds is not None:
        cp["oracle"] = oracle_test_metrics(data, truth, result.test, cp["base_rate"])


def cut_history_for_serving(result: TrainResult, end: pd.Timestamp) -> None:
    """The result's predictor with its builder cut (after every evaluation that reads earlier
    dates) to answer the as-of dates its users ask: scoring from the data `end` on, and the
    forecast's calibration, which values the past periods from the model's out-of-sample start
    on (`training.forecast.calibration.out_of_sample_from`); said in its info and the run's
    messages."""
    from training.forecast.calibration import out_of_sample_from

    predictor = result.predictor
    if predictor.static:
        return
    start = min(end, out_of_sample_from(predictor) or end)
    result.predictor = replace(predictor, builder=predictor.builder.from_date(start),
                               info={**predictor.info, "history_from": start.isoformat()})
    result.messages.append(f"the registered model keeps the history it needs to score as-of dates from its "
                           f"out-of-sample start ({start.date()}) on: scores and forecasts; earlier as-of dates "
                           f"are refused")


def log_run(result: TrainResult, data: CanonicalData, experiment: str, model_name: str, data_dir,
            fingerprint: dict | None = None, training_ids: np.ndarray | None = None) -> dict:
    """One MLflow run: params, data fingerprint, metrics with baselines, plots, the model."""
    predictor = result.predictor
    with tracking.start_run(experiment, run_name=f"{predictor.kind}-{data.meta.name}") as run:
        fingerprint = _log_params(result, data, data_dir, fingerprint)
        skill = candidate_skill(result)
        result.metrics["close_probability"]["skill"] = skill
        tracking.log_metrics_nested(result.metrics)
        _log_plots(result)
        if result.test_features is not None:  # the drift reference (training.monitoring.reference)
            judged = deal_features(predictor.builder)
            log_reference(build_reference(result.test_features[judged], result.test["model"].to_numpy(), "test fold"))
        log_training_ids(data if training_ids is None else training_ids)  # which deals trained this version (hashed): `leadscore forget` asks
        info = log_predictor(predictor, data)
        decision = gate.register_and_gate(
            run.info.run_id, "model", model_name, candidate=candidate_score(result), skill=skill,
            compare_fn=lambda version: champion_score(model_name, version, data, result.test),
            tags=registry.dataset_tags(data.meta, str(fingerprint["data_sha256"])), model_uri=info.model_uri)
    return {"run_id": run.info.run_id, "model_name": model_name, "model_version": decision.version,
            "alias": decision.alias, "gate_reason": decision.reason, "model_kind": predictor.kind,
            "messages": result.messages, **result.metrics}


def candidate_score(result: TrainResult) -> gate.HoldoutScore:
    """The candidate's Brier, AUC and won rate on its own test fold."""
    cp = result.metrics["close_probability"]
    return gate.HoldoutScore(cp.get("brier"), cp.get("auc"), float(result.test["won"].mean()))


def candidate_skill(result: TrainResult) -> dict:
    """Paired skill of the model on its test fold against the base rate and the stage
    baseline (not against itself when the registered model is the stage baseline)."""
    test = result.test
    stage = test["stage_rate"].to_numpy() if "stage_rate" in test and result.predictor.kind == "lightgbm" else None
    return gate.skill_report(test["won"].to_numpy(), test["model"].to_numpy(),
                             result.metrics["close_probability"]["base_rate"], stage)


def _log_params(result: TrainResult, data: CanonicalData, data_dir, fingerprint: dict | None = None) -> dict:
    import mlflow

    fingerprint = fingerprint or tracking.data_fingerprint({"deals": data.deals, "stage_events": data.stage_events,
                                                            "activities": data.activities})
    mlflow.log_params({"data_dir": str(data_dir), "dataset": data.meta.name, "static": data.meta.static,
                       "model_kind": result.predictor.kind, "n_features": len(result.predictor.feature_names),
                       "data_end": None if data.meta.static else str(data.data_end), **fingerprint})
    params = result.metrics.get("model", {}).get("params", {})
    mlflow.log_params({f"lgb_{k}": v for k, v in params.items()})
    mlflow.log_dict({"features": result.predictor.feature_names, "folds": result.metrics.get("folds")},
                    "features_and_folds.json")
    for msg in result.messages:
        mlflow.set_tag("leadscore.message", msg[:4000])
    _log_leakage(result.metrics.get("leakage", {}))
    return fingerprint


def _log_leakage(leakage: dict) -> None:
    """The leakage guard's decision as a param and tags (its AUCs are metrics already)."""
    import mlflow

    excluded, kept = sorted(leakage.get("excluded", {})), sorted(leakage.get("kept", {}))
    mlflow.log_param("excluded_columns", ",".join(excluded) or "-")
    mlflow.set_tags({"leadscore.excluded_columns": ",".join(excluded) or "-",
                     "leadscore.kept_suspected_leaks": ",".join(kept) or "-"})


def _log_plots(result: TrainResult) -> None:
    import mlflow

    test = result.test
    y = test["won"].to_numpy()
    probs = {"model": test["model"].to_numpy(), **{b: test[b].to_numpy() for b in BASELINES if b in test}}
    figures = {"reliability.png": plots.reliability_diagram(y, probs), "roc.png": plots.roc_curves(y, probs),
               "cumulative_gain.png": plots.cumulative_gain(y, probs)}
    model = result.predictor.close_model
    if hasattr(model, "feature_importance"):
        imp = model.feature_importance()
        figures["feature_importance.png"] = plots.feature_importance(list(imp.index), imp.to_numpy())
        X = result.test_features
        figures["shap_summary.png"] = plots.contribution_summary(model.contributions(X, method="shap"), X)
    with tempfile.TemporaryDirectory() as tmp:
        for name, fig in figures.items():
            fig.savefig(Path(tmp) / name, dpi=110, bbox_inches="tight")
            plt.close(fig)
            mlflow.log_artifact(str(Path(tmp) / name), artifact_path="plots")
        test.to_parquet(Path(tmp) / "test_predictions.parquet", index=False)
        mlflow.log_artifact(str(Path(tmp) / "test_predictions.parquet"), artifact_path="evaluation")


def champion_score(model_name: str, version: int, data: CanonicalData, test: pd.DataFrame) -> gate.HoldoutScore | None:
    """A registered version's scores on the candidate's test rows, built from the raw
    canonical tables by its own feature builder. None when it cannot score them: inputs it
    was trained on are missing from the data, some rows cannot be built, or its history
    answers later dates only (`cut_for_serving`)."""
    predictor, _version = registry.load_predictor(model_name, version)
    if missing_inputs(predictor.builder, data):
        return None
    if predictor.static:
        feats = predictor.features(data)
        merged = test[["deal_id", "won"]].merge(feats, on="deal_id", how="inner")
    else:
        try:
            feats = predictor.builder.transform_rows(data, test[["deal_id", "as_of"]])
        except HistoryCutError:  # a champion trained with --cluster answers from its out-of-sample start only
            return None
        merged = test[["deal_id", "as_of", "won"]].merge(feats, on=["deal_id", "as_of"], how="inner")
    if len(merged) < len(test):
        return None
    y, p = merged["won"].to_numpy(), predictor.score_features(merged)["close_probability"].to_numpy()
    auc = ev.roc_auc(y, p)
    return gate.HoldoutScore(ev.brier(y, p), None if np.isnan(auc) else auc, float(y.mean()))


def missing_inputs(builder: FeatureBuilder, data: CanonicalData) -> list[str]:
    """Deal columns a model was trained on (categoricals, attributes) that the data lacks
    or never fills: scoring it there would be scoring it on blanks."""
    deals = data.deals
    used = [*builder.raw_categoricals_, *builder.attributes_]
    return [name for name in used if name not in deals or deals[name].isna().all()]


def evaluate(data: CanonicalData, model_name: str = MODEL_NAME, version: int | None = None, as_of=None) -> dict:
    """Re-score a registered version (default: the champion) on new data: every deal open
    at `as_of` (default: a year before the data end) against what happened after."""
    predictor, version = registry.load_predictor(model_name, version)
    if predictor.static:
        feats = predictor.features(data)
        y = feats["deal_id"].map(data.deals.set_index("deal_id")["outcome"].eq("won").astype(float))
        scored = predictor.score_features(feats)
    else:
        as_of = pd.Timestamp(as_of) if as_of is not None else data.data_end - pd.Timedelta(days=365)
        scored = predictor.score(data, as_of)
        closed = data.deals.set_index("deal_id")
        y = scored["deal_id"].map(closed["outcome"].eq("won").where(closed["outcome"].notna()).astype(float))
    known = y.notna().to_numpy()
    report = ev.classification_report(y.to_numpy()[known], scored["close_probability"].to_numpy()[known],
                                      float(np.nanmean(y)) if known.any() else 0.5)
    return {"model_name": model_name, "model_version": int(version), "as_of": None if as_of is None else str(as_of),
            "n_scored": int(len(scored)), "n_with_outcome": int(known.sum()), "close_probability": report}

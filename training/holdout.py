"""A fitted predictor on the test fold, beside the baselines fitted on the training fold.

`evaluate_on_test` gives the test rows (keys, stage, outcome, model and baseline
predictions) and the metrics JSON's close-probability and time-to-close parts.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from features.build import FeatureBuilder
from training import evaluate as ev
from training.baselines import LogisticBaseline, NaiveBayesBaseline, StageRateBaseline
from training.folds import FOLDS, fold_rows
from training.models import CloseProbabilityModel
from training.predictor import LeadScorePredictor


def evaluate_on_test(predictor: LeadScorePredictor, feats: pd.DataFrame, labels: pd.DataFrame,
                     fold_labels: pd.Series, builder: FeatureBuilder, fold_names: tuple[str, ...] = FOLDS
                     ) -> tuple[pd.DataFrame, dict]:
    """(test rows with model and baseline predictions, metrics) on the "test" rows; the
    baselines are fitted on the "train" rows (none when those hold a single outcome)."""
    names = builder.feature_names_
    tr, te = fold_rows(feats, fold_labels, "train"), fold_rows(feats, fold_labels, "test")
    X_tr, y_tr = feats.loc[tr, names], fold_labels[tr].to_numpy()
    test = feats.loc[te, ["deal_id", "as_of"]].copy()
    test["stage"] = feats.loc[te, "stage"].astype("string").to_numpy() if "stage" in feats else None
    test["segment"] = feats.loc[te, "segment"].astype("string").to_numpy() if "segment" in feats else None
    test["won"] = fold_labels[te].to_numpy()
    scored = predictor.score_features(feats.loc[te])
    test["model"] = scored["close_probability"].to_numpy()
    baselines = baseline_models(names) if len(np.unique(y_tr)) == 2 else {}  # a one-outcome history: none
    for name, model in baselines.items():
        test[name] = model.fit(X_tr, y_tr).predict_proba(feats.loc[te, names])
    base_rate = float(y_tr.mean())
    cp = ev.classification_report(test["won"].to_numpy(), test["model"].to_numpy(), base_rate,
                                  groups={"stage": test["stage"].to_numpy(), "segment": test["segment"].to_numpy()})
    cp["baselines"] = {name: ev.classification_report(test["won"].to_numpy(), test[name].to_numpy(), base_rate)
                       for name in baselines}
    cp["base_rate"] = base_rate
    cp.update(close_model_details(predictor.close_model))
    metrics = {"close_probability": cp, "n_rows": {f: int(fold_rows(feats, fold_labels, f).sum()) for f in fold_names}}
    if predictor.time_model is not None:
        metrics["time_to_close"] = time_metrics(labels.loc[te], scored)
        for col in ("close_days_p10", "close_days_p50", "close_days_p90"):
            test[col] = scored[col].to_numpy()
        test["days_to_close"] = labels.loc[te, "days_to_close"].to_numpy()
    return test, metrics


def sample_test(feats: pd.DataFrame, fold_labels: pd.Series, builder: FeatureBuilder, n: int = 3000
                ) -> pd.DataFrame:
    """A sample of test feature rows, for the plots."""
    X = feats.loc[fold_rows(feats, fold_labels, "test"), builder.feature_names_]
    return X.sample(n=min(n, len(X)), random_state=0)


def baseline_models(feature_names: list[str]) -> dict:
    """The baselines every run reports beside the model, on the same folds. A static
    lead export has no stage, so its CRM-classic baseline is absent (not faked)."""
    out = {"stage_rate": StageRateBaseline()} if "stage" in feature_names else {}
    # naive Bayes over the stage and every categorical attribute, as Odoo does
    return {**out, "naive_bayes": NaiveBayesBaseline(columns=None), "logistic": LogisticBaseline()}


def time_metrics(labels_te: pd.DataFrame, scored: pd.DataFrame) -> dict:
    won = (labels_te["won"] == 1).to_numpy() & labels_te["days_to_close"].notna().to_numpy()
    days = labels_te["days_to_close"].to_numpy()[won]
    q = scored[["close_days_p10", "close_days_p50", "close_days_p90"]].to_numpy()[won]
    out = {"n_won": int(won.sum())}
    if won.sum() == 0:
        return out
    out["mae_days"] = ev.mae(days, q[:, 1])
    for k, a in enumerate((0.1, 0.5, 0.9)):
        out[f"pinball_p{int(a * 100)}"] = ev.pinball_loss(days, q[:, k], a)
    out["coverage_p10_p90"] = ev.interval_coverage(days, q[:, 0], q[:, 2])
    duration = labels_te["duration_days"].to_numpy()
    event = labels_te["event_observed"].to_numpy().astype(bool)
    out["concordance"] = ev.concordance_index(duration, event, scored["close_days_p50"].to_numpy())
    return out


def close_model_details(model) -> dict:
    """Calibration, early stopping and the no-signal fallback (with the rate it serves)."""
    if isinstance(model, CloseProbabilityModel):
        return {"calibration_method": model.calibration_method_, "fallback_to_base_rate": bool(model.fallback_),
                "fallback_rate": float(model.constant_) if model.fallback_ else None,
                "best_iteration": model.best_iteration_}
    return {"calibration_method": None, "fallback_to_base_rate": False, "fallback_rate": None}


def model_params(model) -> dict:
    """LightGBM parameters of a trained close model (nothing for a baseline)."""
    return {"params": model.lgb_params()} if isinstance(model, CloseProbabilityModel) else {}

"""From canonical tables to a fitted predictor and its evaluation, in named steps.

`fit_predictor` is pure (no MLflow): build the point-in-time training set, cut time folds,
fit the close-probability and time-to-close models (or the stage baseline on cold start),
and evaluate everything on the test fold beside the baselines. `training.run` logs it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from features.build import FeatureBuilder, build_training_set
from features.errors import NotEnoughData
from features.schema import CanonicalData
from features.snapshots import as_of_grid
from training import evaluate as ev
from training.baselines import LogisticBaseline, NaiveBayesBaseline, StageRateBaseline
from training.explain import FactorExplainer
from training.folds import FOLDS, TimeFolds, assign_folds, make_time_folds, stratified_folds, won_as_known_at
from training.models import CloseProbabilityModel, StageTimeBaseline, TimeToCloseModel
from training.predictor import LeadScorePredictor

MIN_CLASS_COUNT = 200  # fewer won or lost closed deals than this: cold start


@dataclass
class TrainConfig:
    gap_days: int = 45
    snapshot_freq: str = "W-MON"
    min_class_count: int = MIN_CLASS_COUNT
    seed: int = 0
    n_jobs: int = 2
    close_params: dict = field(default_factory=dict)
    time_params: dict = field(default_factory=dict)


@dataclass
class TrainResult:
    predictor: LeadScorePredictor
    metrics: dict
    test: pd.DataFrame  # test rows: keys, stage, labels, model and baseline predictions
    folds: TimeFolds | None
    messages: list[str]
    test_features: pd.DataFrame | None = None  # a sample of test feature rows, for plots


def fit_predictor(data: CanonicalData, config: TrainConfig | None = None,
                  step: Callable[[str], None] = lambda _s: None) -> TrainResult:
    """Fit and evaluate. `step(name)` is called at each stage, for progress bars."""
    config = config or TrainConfig()
    if data.meta.static:
        return _fit_static(data, config, step)
    step("point-in-time training set")
    feats, labels, builder, folds = _training_set(data, config)
    fold_labels = _fold_labels(data, feats, labels, folds)
    _check_folds(feats, fold_labels, folds)
    messages = []
    counts = _class_counts(data, folds.label_cutoffs[0])
    cold = min(counts.values()) < config.min_class_count
    step("close-probability model")
    if cold:
        messages.append(
            f"cold start: {counts['won']} won and {counts['lost']} lost deals closed before "
            f"{folds.label_cutoffs[0].date()}; a model needs at least {config.min_class_count} of each. "
            f"Registering the stage-rate baseline instead of a model trained on noise.")
    close_model = _fit_close_model(feats, fold_labels, builder, cold, config)
    step("time-to-close model")
    time_model = _fit_time_model(feats, labels, fold_labels, builder, cold, config)
    step("explanations")
    explainer = None if cold else _fit_explainer(feats, fold_labels, builder)
    predictor = LeadScorePredictor(builder=builder, meta=data.meta, close_model=close_model, time_model=time_model,
                                   explainer=explainer, kind="stage_baseline" if cold else "lightgbm",
                                   info={"folds": folds.to_dict(), "class_counts": counts,
                                         "data_end": data.data_end.isoformat()})
    step("baselines and evaluation")
    test, metrics = _evaluate(predictor, feats, labels, fold_labels, builder)
    metrics["folds"] = folds.to_dict()
    metrics["model"] = {"kind": predictor.kind, "messages": messages, **_model_params(close_model)}
    return TrainResult(predictor, metrics, test, folds, messages, _sample_test(feats, fold_labels, builder))


def _training_set(data: CanonicalData, config: TrainConfig):
    end = data.data_end - pd.Timedelta(days=config.gap_days)
    start = data.deals["created_at"].min() + pd.Timedelta(days=28)
    grid = as_of_grid(data, freq=config.snapshot_freq, start=start, end=end)
    feats, labels, builder = build_training_set(data, grid)
    folds = make_time_folds(grid[0], grid[-1] + pd.Timedelta(days=1), data.data_end, gap_days=config.gap_days)
    feats = feats.assign(fold=assign_folds(feats["as_of"], folds).to_numpy())
    return feats, labels, builder, folds


def _fold_labels(data: CanonicalData, feats: pd.DataFrame, labels: pd.DataFrame, folds: TimeFolds) -> pd.Series:
    """`won` per row as known at its fold's label cutoff (NaN: unknown then, row unused)."""
    closed_at = feats["deal_id"].map(data.deals.set_index("deal_id")["closed_at"])
    out = pd.Series(np.nan, index=feats.index)
    for name, cutoff in zip(FOLDS, folds.label_cutoffs):
        rows = (feats["fold"] == name).to_numpy()
        out[rows] = won_as_known_at(labels[rows], closed_at[rows], cutoff).to_numpy()
    return out


def _check_folds(feats: pd.DataFrame, fold_labels: pd.Series, folds: TimeFolds) -> None:
    """Every fold needs resolved rows of both outcomes, or no fold can be evaluated."""
    for name, start, end in zip(FOLDS, folds.starts, folds.ends):
        y = fold_labels[_rows(feats, fold_labels, name)]
        if y.nunique() < 2:
            raise NotEnoughData(
                f"the {name} fold ({start.date()} to {end.date()}) has {len(y)} resolved snapshot rows "
                f"and {int(y.sum()) if len(y) else 0} wins: too few outcomes to train and evaluate on; "
                f"supply a longer history (or, in a backtest, start from later origins)")


def _class_counts(data: CanonicalData, cutoff: pd.Timestamp) -> dict:
    closed = data.deals[data.deals["closed_at"] < cutoff]
    return {"won": int((closed["outcome"] == "won").sum()), "lost": int((closed["outcome"] == "lost").sum())}


def _rows(feats: pd.DataFrame, fold_labels: pd.Series, fold: str) -> np.ndarray:
    return ((feats["fold"] == fold) & fold_labels.notna()).to_numpy()


def _fit_close_model(feats, fold_labels, builder: FeatureBuilder, cold: bool, config: TrainConfig):
    names = builder.feature_names_
    tr = _rows(feats, fold_labels, "train")
    if cold:  # nothing is tuned on valid/calib, so the baseline learns from every fold but test
        tr = tr | _rows(feats, fold_labels, "valid") | _rows(feats, fold_labels, "calib")
    if cold and "stage" in names:
        return StageRateBaseline().fit(feats.loc[tr, names], fold_labels[tr].to_numpy())
    if cold:  # static export: no stage, so the frequency model stands in for the stage rate
        return NaiveBayesBaseline().fit(feats.loc[tr, names], fold_labels[tr].to_numpy())
    va, ca = _rows(feats, fold_labels, "valid"), _rows(feats, fold_labels, "calib")
    model = CloseProbabilityModel(random_state=config.seed, n_jobs=config.n_jobs, **config.close_params)
    return model.fit(feats.loc[tr, names], fold_labels[tr].to_numpy(), feats.loc[va, names],
                     fold_labels[va].to_numpy(), feats.loc[ca, names], fold_labels[ca].to_numpy())


def _won_rows(feats, labels, fold_labels, fold: str) -> np.ndarray:
    return _rows(feats, fold_labels, fold) & (fold_labels == 1).to_numpy() & labels["days_to_close"].notna().to_numpy()


def _fit_time_model(feats, labels, fold_labels, builder: FeatureBuilder, cold: bool, config: TrainConfig):
    names = builder.feature_names_
    tr = _won_rows(feats, labels, fold_labels, "train")
    days = labels["days_to_close"]
    if cold:
        tr = tr | _won_rows(feats, labels, fold_labels, "valid") | _won_rows(feats, labels, fold_labels, "calib")
        return StageTimeBaseline().fit(feats.loc[tr, names], days[tr].to_numpy())
    va, ca = (_won_rows(feats, labels, fold_labels, f) for f in ("valid", "calib"))
    model = TimeToCloseModel(random_state=config.seed, n_jobs=config.n_jobs, **config.time_params)
    return model.fit(feats.loc[tr, names], days[tr].to_numpy(), feats.loc[va, names], days[va].to_numpy(),
                     feats.loc[ca, names], days[ca].to_numpy())


def _fit_explainer(feats, fold_labels, builder: FeatureBuilder) -> FactorExplainer:
    won = feats.loc[_rows(feats, fold_labels, "train") & (fold_labels == 1).to_numpy(), builder.feature_names_]
    won = won.sample(n=min(len(won), 20_000), random_state=0)
    return FactorExplainer().fit(won, builder.describe)


def _evaluate(predictor: LeadScorePredictor, feats, labels, fold_labels, builder: FeatureBuilder):
    names = builder.feature_names_
    tr, te = _rows(feats, fold_labels, "train"), _rows(feats, fold_labels, "test")
    X_tr, y_tr = feats.loc[tr, names], fold_labels[tr].to_numpy()
    test = feats.loc[te, ["deal_id", "as_of"]].copy()
    test["stage"] = feats.loc[te, "stage"].astype("string").to_numpy() if "stage" in feats else None
    test["segment"] = feats.loc[te, "segment"].astype("string").to_numpy() if "segment" in feats else None
    test["won"] = fold_labels[te].to_numpy()
    scored = predictor.score_features(feats.loc[te])
    test["model"] = scored["close_probability"].to_numpy()
    baselines = baseline_models(names)
    for name, model in baselines.items():
        test[name] = model.fit(X_tr, y_tr).predict_proba(feats.loc[te, names])
    base_rate = float(y_tr.mean())
    cp = ev.classification_report(test["won"].to_numpy(), test["model"].to_numpy(), base_rate,
                                  groups={"stage": test["stage"].to_numpy(), "segment": test["segment"].to_numpy()})
    cp["baselines"] = {name: ev.classification_report(test["won"].to_numpy(), test[name].to_numpy(), base_rate)
                       for name in baselines}
    cp["base_rate"] = base_rate
    cp.update(_close_model_details(predictor.close_model))
    metrics = {"close_probability": cp, "n_rows": {f: int(_rows(feats, fold_labels, f).sum()) for f in FOLDS}}
    if predictor.time_model is not None:
        metrics["time_to_close"] = _time_metrics(labels.loc[te], scored)
        for col in ("close_days_p10", "close_days_p50", "close_days_p90"):
            test[col] = scored[col].to_numpy()
        test["days_to_close"] = labels.loc[te, "days_to_close"].to_numpy()
    return test, metrics


def _sample_test(feats, fold_labels, builder: FeatureBuilder, n: int = 3000) -> pd.DataFrame:
    X = feats.loc[_rows(feats, fold_labels, "test"), builder.feature_names_]
    return X.sample(n=min(n, len(X)), random_state=0)


def baseline_models(feature_names: list[str]) -> dict:
    """The baselines every run reports beside the model, on the same folds. A static
    lead export has no stage, so its CRM-classic baseline is absent (not faked)."""
    out = {"stage_rate": StageRateBaseline()} if "stage" in feature_names else {}
    # naive Bayes over the stage and every categorical attribute, as Odoo does
    return {**out, "naive_bayes": NaiveBayesBaseline(columns=None), "logistic": LogisticBaseline()}


def _time_metrics(labels_te: pd.DataFrame, scored: pd.DataFrame) -> dict:
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


def _close_model_details(model) -> dict:
    if isinstance(model, CloseProbabilityModel):
        return {"calibration_method": model.calibration_method_, "fallback_to_base_rate": bool(model.fallback_),
                "best_iteration": model.best_iteration_}
    return {"calibration_method": None, "fallback_to_base_rate": False}


def _model_params(model) -> dict:
    return {"params": model.lgb_params()} if isinstance(model, CloseProbabilityModel) else {}


def _fit_static(data: CanonicalData, config: TrainConfig, step) -> TrainResult:
    """Lead exports without dates: attributes only, stratified random folds, no time model."""
    step("features (static mode)")
    feats, labels, builder = build_training_set(data, None)
    y = labels["won"]
    known = y.notna().to_numpy()
    feats, labels, y = feats[known].reset_index(drop=True), labels[known].reset_index(drop=True), y[known].reset_index(drop=True)
    feats["fold"] = stratified_folds(y.to_numpy(), seed=config.seed).to_numpy()
    counts = {"won": int((y == 1).sum()), "lost": int((y == 0).sum())}
    cold = min(counts.values()) < config.min_class_count
    messages = [f"cold start: {counts['won']} won and {counts['lost']} lost leads (a model needs at least "
                f"{config.min_class_count} of each); the naive-Bayes frequency baseline is registered instead"] if cold else []
    step("close-probability model")
    close_model = _fit_close_model(feats, y, builder, cold, config)
    explainer = None if cold else _fit_explainer(feats, y, builder)
    predictor = LeadScorePredictor(builder=builder, meta=data.meta, close_model=close_model, time_model=None, explainer=explainer,
                                   kind="naive_bayes_baseline" if cold else "lightgbm", info={"class_counts": counts})
    step("baselines and evaluation")
    test, metrics = _evaluate(predictor, feats, labels, y, builder)
    metrics["folds"] = {"static": "stratified random split 60/15/10/15 (no dates)"}
    metrics["model"] = {"kind": predictor.kind, "messages": messages, **_model_params(close_model)}
    return TrainResult(predictor, metrics, test, None, messages, _sample_test(feats, y, builder))

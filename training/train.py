"""From canonical tables to a fitted predictor and its evaluation, in named steps.

`fit_predictor` is pure (no MLflow): leave suspected leaks out (`features.leakage`), build
the point-in-time training set, cut time folds (fewer folds or shorter gaps on a short
export, `training.folds.fold_plans`), fit the close-probability and time-to-close models
(or the stage baseline on cold start, fitted without folds when the export is too short
for any), and evaluate everything on the test fold beside the baselines. `training.run`
logs it. Over 300 lines because its three ways to fit (time folds, static, cold start without
folds) share their steps and labels (stale deals as lost, `features.staleness`) here.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import pandas as pd

from features.build import FeatureBuilder, build_training_set
from features.dates import DAY
from features.errors import NotEnoughData
from features.leakage import LEAK_AUC, LeakDecision, guard_leaks, without_columns
from features.schema import CanonicalData
from features.snapshots import as_of_grid
from features.staleness import StaleRule, fit_age_shift, fit_stale_rule, lost_at_cutoff
from training.baselines import NaiveBayesBaseline, StageRateBaseline
from training.explain import FactorExplainer
from training.folds import (
    MIN_FOLD_DAYS,
    MIN_GAP_DAYS,
    TimeFolds,
    assign_folds,
    fold_plans,
    fold_rows,
    make_time_folds,
    stratified_folds,
    won_as_known_at,
)
from training.holdout import evaluate_on_test, model_params, sample_test
from training.models import CloseProbabilityModel, StageTimeBaseline, TimeToCloseModel
from training.predictor import LeadScorePredictor, Tiers
from training.truncation import truncation_weights

MIN_CLASS_COUNT = 200  # fewer won or lost closed deals than this: cold start
WARM_UP_DAYS = 28  # the as-of grid starts this long after the first deal (history to look back on)


@dataclass
class TrainConfig:
    """How `fit_predictor` trains; `leadscore train` sets the gap, frequency and leak options."""

    gap_days: int = 45
    snapshot_freq: str = "W-MON"
    min_class_count: int = MIN_CLASS_COUNT
    seed: int = 0
    n_jobs: int = 2
    keep_columns: tuple[str, ...] = ()  # suspected leaks kept in the model anyway, by column name
    leak_auc: float = LEAK_AUC  # single-column AUC from which a column is taken for a leak
    close_params: dict = field(default_factory=dict)
    time_params: dict = field(default_factory=dict)
    training_set: Callable | None = field(default=None, repr=False)  # None: build_training_set; or on a cluster
    # when `data` is a sample of the deals (`train --cluster`): the whole data's first creation
    # (the as-of grid starts from it) and what the run says about the sample
    first_created: pd.Timestamp | None = None
    notes: tuple[str, ...] = ()


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
    leaks = guard_leaks(data, tuple(config.keep_columns), config.leak_auc, config.seed)
    if data.meta.static:
        return _fit_static(data, config, leaks, step)
    step("point-in-time training set")
    try:
        feats, labels, builder, folds = _training_set(data, config, leaks.excluded_columns)
        fold_labels = _fold_labels(data, feats, labels, folds)
        _check_folds(feats, fold_labels, folds)
    except NotEnoughData as exc:
        return _fit_without_folds(data, config, leaks, step, reason=str(exc))
    messages = list(config.notes) + leaks.messages() + list(folds.notes)
    counts = _class_counts(data, folds.label_cutoffs[0])
    cold = min(counts["won"], counts["lost"]) < config.min_class_count
    step("close-probability model")
    if cold:
        messages.append(
            f"cold start: {counts['won']} won and {counts['lost']} lost deals ({counts['given_up']} of them open "
            f"past the give-up age) before {folds.label_cutoffs[0].date()}; a model needs at least {config.min_class_count} of each. "
            f"Registering the stage-rate baseline instead of a model trained on noise.")
    close_model = _fit_close_model(feats, fold_labels, builder, cold, config, folds.calib_fold)
    close_model = _recent_rate_fallback(close_model, feats, fold_labels, folds, messages)
    step("time-to-close model")
    time_model = _fit_time_model(feats, labels, fold_labels, builder, cold, config, folds)
    step("explanations")
    explainer = None if cold else _fit_explainer(feats, fold_labels, builder)
    staleness = fit_stale_rule(data)
    predictor = LeadScorePredictor(builder=builder, meta=data.meta, close_model=close_model, time_model=time_model,
                                   explainer=explainer, kind="stage_baseline" if cold else "lightgbm",
                                   tiers=Tiers(constant=cold or _is_fallback(close_model)),
                                   info={"folds": folds.to_dict(), "class_counts": counts,
                                         "data_end": data.data_end.isoformat()}, staleness=staleness)
    predictor.staleness = age_shifted(predictor, data)
    step("baselines and evaluation")
    test, metrics = evaluate_on_test(predictor, feats, labels, fold_labels, builder, folds.names)
    metrics["folds"] = folds.to_dict()
    metrics["fold_plan"] = folds.plan()
    metrics["leakage"] = leaks.to_dict()
    metrics["staleness"] = predictor.staleness.to_dict()
    metrics["model"] = {"kind": predictor.kind, "messages": messages, **model_params(close_model)}
    return TrainResult(predictor, metrics, test, folds, messages, sample_test(feats, fold_labels, builder))


def age_shifted(predictor: LeadScorePredictor, data: CanonicalData) -> StaleRule | None:
    """The predictor's stale rule with `features.staleness.fit_age_shift` learned on the deals
    open at the end of `data` (their P(won) before any shift): the served P(won) of an open
    deal takes its level by age from the win curve, as the forecast's open pipeline does.
    Set before the holdout evaluation, so the test metrics and predictions are those of the
    served P(won) (their labels, known at the data end, still leave out the deals open then)."""
    rule = predictor.staleness
    if rule is None or predictor.static or _is_fallback(predictor.close_model):
        return rule  # the no-signal fallback serves the most recent base rate, a constant (`_recent_rate_fallback`)
    feats = predictor.features(data, data.data_end)
    if feats.empty or "deal_age_days" not in feats:
        return rule
    p = np.asarray(predictor.close_model.predict_proba(feats[predictor.feature_names]), dtype="float64")
    return fit_age_shift(rule, data.deals, feats["deal_age_days"].to_numpy(dtype="float64"), p)


def _training_set(data: CanonicalData, config: TrainConfig, leave_out: list[str] | tuple = ()):
    """(features, labels, builder, folds): snapshot rows on the as-of grid of the first
    fold plan the export is long enough for; the builder leaves out the `leave_out` columns."""
    grid, folds = _plan_folds(data, config)
    feats, labels, builder = (config.training_set or build_training_set)(data, grid)
    builder = without_columns(builder, list(leave_out))
    feats = feats.assign(fold=assign_folds(feats["as_of"], folds).to_numpy())
    return feats, labels, builder, folds


def training_grid(data: CanonicalData, config: TrainConfig) -> pd.DatetimeIndex:
    """The as-of dates of the training set `fit_predictor` builds on `data` (NotEnoughData:
    too short for time folds)."""
    return _plan_folds(data, config)[0]


def history_needed_from(data: CanonicalData, config: TrainConfig) -> pd.Timestamp:
    """The earliest as-of date `fit_predictor` and `training.run.train` read with the fitted
    builder once the training set is built: the test fold's start (the holdout's baselines,
    the creation-time metrics) or a fold's label cutoff (the out-of-sample start the served
    model is cut from, `training.run.cut_history_for_serving`), capped at the data end.
    `train --cluster` brings the builder here cut from it (NotEnoughData: too short for folds)."""
    folds = _plan_folds(data, config)[1]
    return min(folds.test_start, *folds.label_cutoffs, data.data_end)


def _plan_folds(data: CanonicalData, config: TrainConfig) -> tuple[pd.DatetimeIndex, TimeFolds]:
    """The as-of grid and folds of the first plan of `fold_plans` that fits the export."""
    first = data.deals["created_at"].min() if config.first_created is None else config.first_created
    start = first + pd.Timedelta(days=WARM_UP_DAYS)
    for names, gap_days, note in fold_plans(config.gap_days):
        end = data.data_end - pd.Timedelta(days=gap_days)
        try:
            grid = as_of_grid(data, config.snapshot_freq, start, end)
            folds = make_time_folds(grid[0], grid[-1] + pd.Timedelta(days=1), data.data_end,
                                    gap_days=gap_days, names=names)
        except NotEnoughData:
            continue
        return grid, replace(folds, notes=(note,)) if note else folds
    raise NotEnoughData(
        f"the history from {data.deals['created_at'].min().date()} to {data.data_end.date()} is too short "
        f"for time folds: three folds need more than {3 * MIN_FOLD_DAYS} days of '{config.snapshot_freq}' "
        f"as-of dates besides two gaps of at least {MIN_GAP_DAYS} days and the first {WARM_UP_DAYS} days")


def _fold_labels(data: CanonicalData, feats: pd.DataFrame, labels: pd.DataFrame, folds: TimeFolds) -> pd.Series:
    """`won` per row as known at its fold's label cutoff (NaN: unknown then, row unused);
    a deal still open at the cutoff and older then than every deal won by then counts as
    lost (`features.staleness.lost_at_cutoff`), so long-open deals are in the training set."""
    closed_at = feats["deal_id"].map(data.deals.set_index("deal_id")["closed_at"])
    out = pd.Series(np.nan, index=feats.index)
    for name, cutoff in zip(folds.names, folds.label_cutoffs):
        rows = (feats["fold"] == name).to_numpy()
        known = won_as_known_at(labels[rows], closed_at[rows], cutoff).to_numpy()
        out[rows] = np.where(lost_at_cutoff(data.deals, feats.loc[rows, "deal_id"], cutoff), 0.0, known)
    return out


def _check_folds(feats: pd.DataFrame, fold_labels: pd.Series, folds: TimeFolds) -> None:
    """Every fold needs resolved rows of both outcomes, or no fold can be evaluated."""
    for name, start, end in zip(folds.names, folds.starts, folds.ends):
        y = fold_labels[fold_rows(feats, fold_labels, name)]
        if y.nunique() < 2:
            raise NotEnoughData(
                f"the {name} fold ({start.date()} to {end.date()}) has {len(y)} resolved snapshot rows "
                f"and {int(y.sum()) if len(y) else 0} wins: too few outcomes to train and evaluate on; "
                f"supply a longer history (or, in a backtest, start from later origins)")


def _class_counts(data: CanonicalData, cutoff: pd.Timestamp) -> dict:
    """Won and lost deals by `cutoff`; lost includes the open deals past the give-up age then
    (`lost_at_cutoff`: the labels count them lost), also given apart as `given_up`."""
    closed = data.deals[data.deals["closed_at"] < cutoff]
    given_up = int(lost_at_cutoff(data.deals, data.deals["deal_id"], cutoff).sum())
    return {"won": int((closed["outcome"] == "won").sum()),
            "lost": int((closed["outcome"] == "lost").sum()) + given_up, "given_up": given_up}


def _fit_close_model(feats, fold_labels, builder: FeatureBuilder, cold: bool, config: TrainConfig,
                     calib_fold: str = "calib"):
    names = builder.feature_names_
    tr = fold_rows(feats, fold_labels, "train")
    if cold:  # nothing is tuned on valid/calib, so the baseline learns from every fold but test
        tr = tr | fold_rows(feats, fold_labels, "valid") | fold_rows(feats, fold_labels, "calib")
    if cold and "stage" in names:
        return StageRateBaseline().fit(feats.loc[tr, names], fold_labels[tr].to_numpy())
    if cold:  # static export: no stage, so the frequency model stands in for the stage rate
        return NaiveBayesBaseline().fit(feats.loc[tr, names], fold_labels[tr].to_numpy())
    va, ca = fold_rows(feats, fold_labels, "valid"), fold_rows(feats, fold_labels, calib_fold)
    model = CloseProbabilityModel(random_state=config.seed, n_jobs=config.n_jobs, **config.close_params)
    return model.fit(feats.loc[tr, names], fold_labels[tr].to_numpy(), feats.loc[va, names],
                     fold_labels[va].to_numpy(), feats.loc[ca, names], fold_labels[ca].to_numpy())


def _won_rows(feats, labels, fold_labels, fold: str) -> np.ndarray:
    return fold_rows(feats, fold_labels, fold) & (fold_labels == 1).to_numpy() & labels["days_to_close"].notna().to_numpy()


def _fit_time_model(feats, labels, fold_labels, builder: FeatureBuilder, cold: bool, config: TrainConfig,
                    folds: TimeFolds | None = None):
    names = builder.feature_names_
    tr = _won_rows(feats, labels, fold_labels, "train")
    days = labels["days_to_close"]
    if cold:
        tr = tr | _won_rows(feats, labels, fold_labels, "valid") | _won_rows(feats, labels, fold_labels, "calib")
        return StageTimeBaseline().fit(feats.loc[tr, names], days[tr].to_numpy())
    rows = [_won_rows(feats, labels, fold_labels, f) for f in ("train", "valid", folds.calib_fold)]
    limits = ((feats["fold"].map(dict(zip(folds.names, folds.label_cutoffs))) - feats["as_of"]) / DAY).to_numpy(float)
    weights = tuple(truncation_weights(days[r].to_numpy(), limits[(feats["fold"] == f).to_numpy()])
                    for r, f in zip(rows, ("train", "valid", folds.calib_fold)))
    (tr, va, ca) = rows
    model = TimeToCloseModel(random_state=config.seed, n_jobs=config.n_jobs, **config.time_params)
    return model.fit(feats.loc[tr, names], days[tr].to_numpy(), feats.loc[va, names], days[va].to_numpy(),
                     feats.loc[ca, names], days[ca].to_numpy(), weights=weights)


def _fit_explainer(feats, fold_labels, builder: FeatureBuilder) -> FactorExplainer:
    won = feats.loc[fold_rows(feats, fold_labels, "train") & (fold_labels == 1).to_numpy(), builder.feature_names_]
    won = won.sample(n=min(len(won), 20_000), random_state=0)
    return FactorExplainer().fit(won, builder.describe)


def _is_fallback(model) -> bool:
    return bool(getattr(model, "fallback_", False))


def _recent_rate_fallback(model, feats: pd.DataFrame, fold_labels: pd.Series, folds: TimeFolds,
                          messages: list[str]):
    """A close model that fell back to a constant (no signal) serves the win rate of the
    most recent labelled rows, those of the calibration fold (labels as known when the test
    fold starts), not the training fold's: a returned copy, the fitted model is unchanged."""
    if not _is_fallback(model):
        return model
    rows = fold_rows(feats, fold_labels, folds.calib_fold)
    recent = copy.copy(model)
    recent.constant_ = float(fold_labels[rows].mean())
    i = folds.names.index(folds.calib_fold)
    messages.append(
        f"no signal: the model does not beat a constant on the {folds.calib_fold} fold, so it serves the win "
        f"rate of that fold's snapshot rows ({folds.starts[i].date()} to {folds.ends[i].date()}): "
        f"{recent.constant_:.3f} (the training fold's rate was {model.constant_:.3f}); every tier is 'baseline'")
    return recent


def _fit_static(data: CanonicalData, config: TrainConfig, leaks: LeakDecision, step) -> TrainResult:
    """Lead exports without dates: attributes only, stratified random folds, no time model."""
    step("features (static mode)")
    feats, labels, builder = build_training_set(data, None)
    builder = without_columns(builder, leaks.excluded_columns)
    y = labels["won"]
    known = y.notna().to_numpy()
    feats, labels, y = feats[known].reset_index(drop=True), labels[known].reset_index(drop=True), y[known].reset_index(drop=True)
    feats["fold"] = stratified_folds(y.to_numpy(), seed=config.seed).to_numpy()
    counts = {"won": int((y == 1).sum()), "lost": int((y == 0).sum())}
    cold = min(counts.values()) < config.min_class_count
    messages = leaks.messages() + ([
        (f"cold start: {counts['won']} won and {counts['lost']} lost leads (a model needs at least "
         f"{config.min_class_count} of each); the naive-Bayes frequency baseline is registered instead")] if cold else [])
    step("close-probability model")
    close_model = _fit_close_model(feats, y, builder, cold, config)
    explainer = None if cold else _fit_explainer(feats, y, builder)
    predictor = LeadScorePredictor(builder=builder, meta=data.meta, close_model=close_model, time_model=None,
                                   explainer=explainer, kind="naive_bayes_baseline" if cold else "lightgbm",
                                   tiers=Tiers(constant=cold or _is_fallback(close_model)),
                                   info={"class_counts": counts})
    step("baselines and evaluation")
    test, metrics = evaluate_on_test(predictor, feats, labels, y, builder)
    metrics["folds"] = {"static": "stratified random split 60/15/10/15 (no dates)"}
    metrics["leakage"] = leaks.to_dict()
    metrics["model"] = {"kind": predictor.kind, "messages": messages, **model_params(close_model)}
    return TrainResult(predictor, metrics, test, None, messages, sample_test(feats, y, builder))


def _fit_without_folds(data: CanonicalData, config: TrainConfig, leaks: LeakDecision, step, reason: str
                       ) -> TrainResult:
    """Cold start of an export too short (or too small) for time folds: the stage-rate
    baseline on every snapshot row resolved by the end of the data, evaluated in-sample."""
    step("cold start without time folds")
    feats, labels, builder = build_training_set(data, _whole_grid(data, config.snapshot_freq))
    builder = without_columns(builder, leaks.excluded_columns)
    y = labels["won"].mask(lost_at_cutoff(data.deals, feats["deal_id"], data.data_end), 0.0)
    if y.notna().sum() == 0:
        raise NotEnoughData(f"{reason}; and none of the {len(data.deals)} deals closed while open at an as-of "
                            f"date, so there is no win rate to start from: supply an export with closed deals")
    # the resolved rows twice: fitted as "train", reported as "test" (in-sample: there is no holdout)
    both = pd.concat([feats.assign(fold="train"), feats.assign(fold="test")], ignore_index=True)
    labels2, y2 = pd.concat([labels, labels], ignore_index=True), pd.concat([y, y], ignore_index=True)
    closed = data.deals["outcome"].value_counts()
    counts = {"won": int(closed.get("won", 0)), "lost": int(closed.get("lost", 0))}
    messages = [*leaks.messages(), (
        f"cold start: too little history for time folds ({reason}). Registering the stage-rate baseline fitted "
        f"on all {int(y.notna().sum())} resolved snapshot rows ({counts['won']} won and {counts['lost']} lost "
        f"deals); its metrics are in-sample, not a holdout, and every tier is 'baseline'.")]
    step("close-probability model")
    close_model = _fit_close_model(both, y2, builder, True, config)
    time_model = _fit_time_model(both, labels2, y2, builder, True, config)
    predictor = LeadScorePredictor(builder=builder, meta=data.meta, close_model=close_model, time_model=time_model,
                                   kind="stage_baseline", tiers=Tiers(constant=True),
                                   info={"folds": None, "class_counts": counts, "data_end": data.data_end.isoformat()},
                                   staleness=fit_stale_rule(data))
    predictor.staleness = age_shifted(predictor, data)
    step("in-sample evaluation")
    test, metrics = evaluate_on_test(predictor, both, labels2, y2, builder, ("train",))
    metrics["close_probability"]["in_sample"] = True
    metrics["folds"] = {"none": reason}
    metrics["fold_plan"] = {"n_folds": 0, "gap_days": None, "notes": [reason]}
    metrics["leakage"] = leaks.to_dict()
    metrics["staleness"] = predictor.staleness.to_dict()
    metrics["model"] = {"kind": predictor.kind, "messages": messages}
    return TrainResult(predictor, metrics, test, None, messages, sample_test(both, y2, builder))


def _whole_grid(data: CanonicalData, freq: str) -> pd.DatetimeIndex:
    """As-of dates from the first creation to the end of the data, daily if `freq` has none."""
    try:
        return as_of_grid(data, freq)
    except NotEnoughData:
        return as_of_grid(data, "D")

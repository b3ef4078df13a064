"""The two LightGBM models: calibrated close probability, and time to a won close.

Both are scikit-learn style: parameters in `__init__`, `fit` returns self, learned state
ends in `_`. Folds are passed explicitly because they are time folds (training.folds).
They predict through LightGBM's fast path (`training.lightgbm_fast`); what the predictor
asks of them is written down in `training.model_protocols`.
"""
from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy.special import expit, ndtr
from scipy.stats import norm
from sklearn.base import BaseEstimator
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted

from training.attribution import PathAttribution
from training.lightgbm_fast import lgb_matrix, matrix_ready, predict_booster
from training.truncation import weighted_quantile

Z90 = norm.ppf(0.9)  # P10..P90 spans +-1.2816 sd of a normal


class PlattCalibrator(BaseEstimator):
    """Logistic regression on the raw log-odds (keeps the ranking, fixes the scale)."""

    def fit(self, raw: np.ndarray, y: np.ndarray) -> "PlattCalibrator":
        self.lr_ = LogisticRegression(C=1e4).fit(raw.reshape(-1, 1), y)
        return self

    def predict(self, raw: np.ndarray) -> np.ndarray:
        # LogisticRegression.predict_proba's own arithmetic, without its input checks (~0.3 ms a call)
        return expit(np.asarray(raw, dtype="float64") * self.lr_.coef_[0, 0] + self.lr_.intercept_[0])


class IsotonicCalibrator(BaseEstimator):
    """Isotonic regression on the raw log-odds (any monotone miscalibration)."""

    def fit(self, raw: np.ndarray, y: np.ndarray) -> "IsotonicCalibrator":
        self.iso_ = IsotonicRegression(out_of_bounds="clip", y_min=1e-4, y_max=1 - 1e-4).fit(raw, y)
        return self

    def predict(self, raw: np.ndarray) -> np.ndarray:
        # IsotonicRegression.predict (clip, then linear interpolation) without its input checks
        iso = self.iso_
        return np.interp(np.clip(np.asarray(raw, dtype="float64"), iso.X_min_, iso.X_max_),
                         iso.X_thresholds_, iso.y_thresholds_)


CALIBRATORS = {"platt": PlattCalibrator, "isotonic": IsotonicCalibrator}


def _brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((p - y) ** 2))


def choose_calibrator(raw: np.ndarray, y: np.ndarray, method: str = "auto") -> tuple[str, dict]:
    """Pick Platt or isotonic by 2-fold cross-validated Brier on the calibration fold.

    Folds alternate rows in time order so both halves see the whole calibration period.
    Returns the chosen name and the cross-validated Brier of each candidate, of the
    constant, and `signal_z`: the chosen calibrator's mean Brier improvement over the
    constant in standard errors (the no-signal guard's statistic).
    """
    candidates = list(CALIBRATORS) if method == "auto" else [method]
    halves = [np.arange(len(y)) % 2 == k for k in (0, 1)]
    preds = {}
    for name in candidates:
        preds[name] = np.empty(len(y))
        for fit_mask in halves:
            cal = CALIBRATORS[name]().fit(raw[fit_mask], y[fit_mask])
            preds[name][~fit_mask] = cal.predict(raw[~fit_mask])
    constant = np.empty(len(y))
    for fit_mask in halves:
        constant[~fit_mask] = y[fit_mask].mean()
    scores = {name: _brier(y, p) for name, p in preds.items()}
    scores["constant"] = _brier(y, constant)
    best = min(candidates, key=scores.get)
    gain = (constant - y) ** 2 - (preds[best] - y) ** 2
    scores["signal_z"] = float(gain.mean() / (gain.std(ddof=1) / np.sqrt(len(gain)) + 1e-12))
    return best, scores


class CloseProbabilityModel(BaseEstimator):
    """LightGBM P(won | open at T), early-stopped on the validation fold and calibrated on a
    later fold. Falls back to the training base rate when the calibrated model does not beat
    a constant on the calibration fold (data with no signal), so its Brier skill is 0 instead
    of negative from fitting noise."""

    def __init__(self, n_estimators: int = 3000, learning_rate: float = 0.03, num_leaves: int = 31,
                 min_child_samples: int = 200, reg_lambda: float = 5.0, feature_fraction: float = 0.8,
                 bagging_fraction: float = 0.8, early_stopping_rounds: int = 100,
                 calibration: str = "auto", min_signal_z: float = 4.0, random_state: int = 0, n_jobs: int = 2,
                 booster_trainer=None):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.reg_lambda = reg_lambda
        self.feature_fraction = feature_fraction
        self.bagging_fraction = bagging_fraction
        self.early_stopping_rounds = early_stopping_rounds
        self.calibration = calibration
        self.min_signal_z = min_signal_z
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.booster_trainer = booster_trainer  # None: lgb.train here; else e.g. training.distributed_fit.DaskBoosterTrainer

    def lgb_params(self) -> dict:
        return {"objective": "binary", "learning_rate": self.learning_rate, "num_leaves": self.num_leaves,
                "min_data_in_leaf": self.min_child_samples, "lambda_l2": self.reg_lambda,
                "feature_fraction": self.feature_fraction, "bagging_fraction": self.bagging_fraction,
                "bagging_freq": 1, "seed": self.random_state, "num_threads": self.n_jobs,
                "verbosity": -1, "metric": "binary_logloss", "cat_smooth": 20, "min_data_per_group": 50}

    def fit(self, X: pd.DataFrame, y: np.ndarray, X_valid: pd.DataFrame, y_valid: np.ndarray,
            X_calib: pd.DataFrame, y_calib: np.ndarray) -> "CloseProbabilityModel":
        y, y_valid, y_calib = (np.asarray(a, dtype=float) for a in (y, y_valid, y_calib))
        self.feature_names_in_ = list(X.columns)
        self.base_rate_ = float(y.mean())
        self.booster_ = (self.booster_trainer or self._train_booster)(self.lgb_params(), X, y, X_valid, y_valid)
        self.best_iteration_ = int(self.booster_.best_iteration or self.booster_.current_iteration())
        raw = self.predict_raw(X_calib)
        self.calibration_method_, self.calibration_scores_ = choose_calibrator(raw, y_calib, self.calibration)
        self.calibrator_ = CALIBRATORS[self.calibration_method_]().fit(raw, y_calib)
        # keep the model only if it beats a constant clearly (rows of one deal are correlated,
        # hence a stricter bar than 2 standard errors)
        self.fallback_ = self.calibration_scores_["signal_z"] < self.min_signal_z
        # the fallback is the training base rate: exactly the reference of the Brier skill
        self.constant_ = self.base_rate_
        return self

    def _train_booster(self, params: dict, X, y, X_valid, y_valid) -> lgb.Booster:
        train_set = lgb.Dataset(X, y, free_raw_data=True)
        return lgb.train(params, train_set, num_boost_round=self.n_estimators, valid_names=["valid"],
                         valid_sets=[lgb.Dataset(X_valid, y_valid, reference=train_set)],
                         callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)])

    def predict_raw(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Uncalibrated log-odds from the booster (X: a frame, or its `lgb_matrix`)."""
        check_is_fitted(self, "booster_")
        return self._raw(X)

    def _raw(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        return predict_booster(self.booster_, X, self.feature_names_in_, raw_score=True, num_iteration=self.best_iteration_)

    def predict_proba(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Calibrated P(won) per row (1-D)."""
        check_is_fitted(self, "calibrator_")
        if self.fallback_:
            return np.full(len(X), self.constant_)
        return self._calibrated(self._raw(X))

    def _calibrated(self, raw: np.ndarray) -> np.ndarray:
        return np.clip(self.calibrator_.predict(raw), 1e-4, 1 - 1e-4)

    def predict_proba_and_contributions(self, X: pd.DataFrame | np.ndarray, method: str = "path",
                                        attribution: PathAttribution | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(`predict_proba(X)`, `contributions(X, method, attribution)`). With path attribution
        both come from one walk of the trees: the raw score is summed from the leaves reached
        exactly as LightGBM's predict sums it (bitwise equal, tested), which saves a predict
        (~9 ms for 1,000 rows)."""
        check_is_fitted(self, "calibrator_")
        if method != "path" or self.fallback_ or len(X) == 0:
            return self.predict_proba(X), self.contributions(X, method, attribution)
        attribution = attribution or self.path_attribution()
        if not attribution.sums_like_predict_:
            return self.predict_proba(X), self.contributions(X, method, attribution)
        leaves = predict_booster(self.booster_, X, self.feature_names_in_, pred_leaf=True,
                                 num_iteration=self.best_iteration_)
        return self._calibrated(attribution.raw_from_leaves(leaves)), attribution.from_leaves(leaves)

    CONTRIBUTION_METHODS = ("path", "shap")

    def contributions(self, X: pd.DataFrame | np.ndarray, method: str = "path",
                      attribution: PathAttribution | None = None) -> np.ndarray:
        """Per-feature log-odds contributions, last column the bias; each row sums to the raw
        score. method "path": path attribution (training.attribution; as cheap as a predict,
        the scoring default; `attribution`: the table of `path_attribution()`, built here when
        not given); "shap": LightGBM's exact TreeSHAP (~100x slower, for analysis)."""
        check_is_fitted(self, "booster_")
        if method not in self.CONTRIBUTION_METHODS:
            raise ValueError(f"unknown contribution method {method!r}; use one of {list(self.CONTRIBUTION_METHODS)}")
        if len(X) == 0:  # LightGBM's predict fails on no rows
            return np.zeros((0, len(self.feature_names_in_) + 1))
        if method == "shap":
            return predict_booster(self.booster_, X, self.feature_names_in_, pred_contrib=True,
                                   num_iteration=self.best_iteration_)
        leaves = predict_booster(self.booster_, X, self.feature_names_in_, pred_leaf=True,
                                 num_iteration=self.best_iteration_)
        return (attribution or self.path_attribution()).from_leaves(leaves)

    def path_attribution(self) -> PathAttribution:
        """The path attribution table of the booster (~0.1 s for a few hundred trees). Built
        per call: the serving object (`training.compiled.CompiledPredictor`) keeps one."""
        check_is_fitted(self, "booster_")
        return PathAttribution().fit(self.booster_, self.best_iteration_)

    def feature_importance(self) -> pd.Series:
        check_is_fitted(self, "booster_")
        gain = self.booster_.feature_importance("gain", iteration=self.best_iteration_)
        return pd.Series(gain, index=self.feature_names_in_).sort_values(ascending=False)


class TimeToCloseModel(BaseEstimator):
    """Distribution of days from T to a won close, for deals that will be won: three LightGBM
    quantile models (P10/P50/P90) on log1p(days), their rows weighted against the folds' label
    cutoffs (`training.truncation`), each shifted on the calibration fold so its (weighted) level
    matches (conformalised quantile regression). A log-normal through the quantiles gives
    P(close by d | won); times P(won), P(won by d), which therefore never exceeds P(won)."""

    quantiles = (0.1, 0.5, 0.9)

    def __init__(self, n_estimators: int = 2000, learning_rate: float = 0.05, num_leaves: int = 31,
                 min_child_samples: int = 100, early_stopping_rounds: int = 100, random_state: int = 0,
                 n_jobs: int = 2):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.early_stopping_rounds = early_stopping_rounds
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(self, X: pd.DataFrame, days: np.ndarray, X_valid: pd.DataFrame, days_valid: np.ndarray,
            X_calib: pd.DataFrame, days_calib: np.ndarray, weights: tuple | None = None) -> "TimeToCloseModel":
        self.feature_names_in_ = list(X.columns)
        y, y_valid, y_calib = (np.log1p(np.clip(np.asarray(d, float), 0, None)) for d in (days, days_valid, days_calib))
        w, w_valid, w_calib = weights or (None, None, np.ones(len(y_calib)))
        self.boosters_ = []
        for alpha in self.quantiles:
            params = {"objective": "quantile", "alpha": alpha, "metric": "quantile",
                      "learning_rate": self.learning_rate, "num_leaves": self.num_leaves,
                      "min_data_in_leaf": self.min_child_samples, "seed": self.random_state,
                      "num_threads": self.n_jobs, "verbosity": -1}
            train_set = lgb.Dataset(X, y, weight=w)
            valid_set = lgb.Dataset(X_valid, y_valid, weight=w_valid, reference=train_set)
            booster = lgb.train(params, train_set, num_boost_round=self.n_estimators, valid_sets=[valid_set],
                                callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)])
            self.boosters_.append(booster)
        raw = self._raw_quantiles(X_calib)
        # shift each quantile so that a (weighted) share alpha of the calibration fold falls below it
        self.shifts_ = np.array([weighted_quantile(y_calib - raw[:, k], w_calib, a) for k, a in enumerate(self.quantiles)])
        return self

    def _raw_quantiles(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        if isinstance(X, pd.DataFrame) and self.boosters_ and matrix_ready(X[self.feature_names_in_]):
            X = lgb_matrix(X[self.feature_names_in_], self.boosters_[0].pandas_categorical)  # once for the three
        return np.column_stack([predict_booster(b, X, self.feature_names_in_, num_iteration=b.best_iteration or None)
                                for b in self.boosters_])

    def predict_log_quantiles(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """(n, 3) log1p(days) quantiles, sorted so P10 <= P50 <= P90."""
        check_is_fitted(self, "shifts_")
        q = self._raw_quantiles(X) + self.shifts_
        q = np.sort(q, axis=1)
        return np.maximum(q, 0.0)


def lognormal_params(log_quantiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of log1p(days) from its P10/P50/P90 (the last axis)."""
    mu = log_quantiles[..., 1]
    sigma = np.maximum((log_quantiles[..., 2] - log_quantiles[..., 0]) / (2 * Z90), 0.05)
    return mu, sigma


def cdf_won_by(log_quantiles: np.ndarray, days: np.ndarray | float) -> np.ndarray:
    """P(close within `days` | won) per row (days broadcast against rows; (n, 1, 3) log
    quantiles against (1, k) days give (n, k))."""
    mu, sigma = lognormal_params(log_quantiles)
    d = np.log1p(np.clip(np.asarray(days, dtype=float), 0, None))
    return ndtr((d - mu) / sigma)  # norm.cdf's own kernel, without its argument handling


class StageTimeBaseline(BaseEstimator):
    """Cold-start time to close: empirical P10/P50/P90 of days to a won close per stage."""

    def __init__(self, stage_column: str = "stage", min_rows: int = 20):
        self.stage_column = stage_column
        self.min_rows = min_rows

    def fit(self, X: pd.DataFrame, days: np.ndarray) -> "StageTimeBaseline":
        logd = pd.Series(np.log1p(np.clip(np.asarray(days, float), 0, None)), index=X.index)
        self.overall_ = np.quantile(logd, TimeToCloseModel.quantiles) if len(logd) else np.log1p([7.0, 30.0, 90.0])
        self.by_stage_ = {}
        if self.stage_column in X:
            for stage, vals in logd.groupby(X[self.stage_column].astype("string")):
                if len(vals) >= self.min_rows:
                    self.by_stage_[str(stage)] = np.quantile(vals, TimeToCloseModel.quantiles)
        return self

    def predict_log_quantiles(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "overall_")
        stages = X[self.stage_column].astype("string") if self.stage_column in X else pd.Series([None] * len(X))
        return np.vstack([self.by_stage_.get(s, self.overall_) if isinstance(s, str) else self.overall_
                          for s in stages.tolist()]) if len(X) else np.empty((0, 3))


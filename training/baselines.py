"""Baselines reported beside the model on the same folds.

Each is a scikit-learn style estimator over a feature DataFrame: `fit(X, y)` returns
self, `predict_proba(X)` returns a 1-D array of P(won). Unseen categories and missing
values never raise: they fall back to what the training data says about "unknown".
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from sklearn.utils.validation import check_is_fitted

from features.winrates import smoothed_group_rate

MISSING = "__missing__"


def _binary_target(y, n_rows: int) -> np.ndarray:
    y = np.asarray(y, dtype="float64").ravel()
    if y.size != n_rows:
        raise ValueError(f"y has {y.size} values for {n_rows} rows of X")
    if np.isnan(y).any() or not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y must hold only 0 (lost) and 1 (won): drop censored rows before fitting")
    return y


def _labels(values: pd.Series) -> pd.Series:
    """Category labels as plain strings, missing values as their own level."""
    return values.astype(object).where(values.notna(), MISSING).astype(str)


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)


class StageRateBaseline(BaseEstimator):
    """The CRM classic: the historical win rate of the deal's current stage.

    Rates are `features.winrates.smoothed_group_rate` over the training rows in each
    stage (won rows, lost rows), shrunk toward the rows' overall share won with
    `smoothing` pseudo-rows, so a rarely seen stage does not get a rate of 0 or 1. A
    stage never seen in training (or missing) gets the overall share.
    """

    def __init__(self, stage_column: str = "stage", smoothing: float = 10.0):
        self.stage_column = stage_column
        self.smoothing = smoothing

    def fit(self, X: pd.DataFrame, y) -> "StageRateBaseline":
        if self.stage_column not in X:
            raise ValueError(f"StageRateBaseline needs a '{self.stage_column}' column; "
                             f"pass stage_column= to name the stage feature")
        y = _binary_target(y, len(X))
        self.global_rate_ = float(y.mean())
        stats = pd.DataFrame({"stage": _labels(X[self.stage_column]).to_numpy(), "y": y})
        grouped = stats.groupby("stage")["y"].agg(["sum", "count"])
        self.rates_ = smoothed_group_rate(grouped["sum"], grouped["count"] - grouped["sum"], self.global_rate_,
                                          self.smoothing).to_dict()
        self.rates_.pop(MISSING, None)  # missing stage is treated as unknown: global rate
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "rates_")
        stages = _labels(X[self.stage_column])
        return stages.map(self.rates_).fillna(self.global_rate_).to_numpy(dtype="float64")


class NaiveBayesBaseline(BaseEstimator):
    """Frequency-based naive Bayes, the approach of Odoo's predictive lead scoring.

    For each field, P(value | won) and P(value | lost) are counted on the training rows
    with Laplace smoothing `alpha`; the evidence of all fields is added in log-odds to
    the prior. Missing is a level of its own; a level never seen in training adds no
    evidence. `columns=None` uses every non-numeric column; numeric columns that are
    named explicitly are cut into `numeric_bins` quantile bins learned on training data.
    """

    def __init__(self, columns: list[str] | None = None, alpha: float = 1.0, numeric_bins: int = 5):
        self.columns = columns
        self.alpha = alpha
        self.numeric_bins = numeric_bins

    def fit(self, X: pd.DataFrame, y) -> "NaiveBayesBaseline":
        y = _binary_target(y, len(X))
        columns = self.columns if self.columns is not None else \
            [c for c in X.columns if not _is_numeric(X[c]) and not pd.api.types.is_datetime64_any_dtype(X[c])]
        missing = [c for c in columns if c not in X]
        if missing:
            raise ValueError(f"NaiveBayesBaseline: columns {missing} are not in X")
        self.columns_ = list(columns)
        self.bin_edges_ = {c: self._edges(X[c]) for c in self.columns_ if _is_numeric(X[c])}
        won = y.sum()
        lost = y.size - won
        self.prior_log_odds_ = float(np.log((won + self.alpha) / (lost + self.alpha)))
        self.log_ratios_ = {}
        for col in self.columns_:
            counts = pd.crosstab(self._levels(X, col).to_numpy(), y).reindex(columns=[0.0, 1.0], fill_value=0)
            k = len(counts) + 1  # +1 reserves mass for levels not seen in training
            p_won = (counts[1.0] + self.alpha) / (won + self.alpha * k)
            p_lost = (counts[0.0] + self.alpha) / (lost + self.alpha * k)
            self.log_ratios_[col] = np.log(p_won / p_lost).to_dict()
        return self

    def _edges(self, values: pd.Series) -> np.ndarray:
        qs = np.linspace(0, 1, self.numeric_bins + 1)[1:-1]
        return np.unique(np.nanquantile(values.to_numpy(dtype="float64"), qs)) \
            if values.notna().any() else np.array([])

    def _levels(self, X: pd.DataFrame, col: str) -> pd.Series:
        if col in self.bin_edges_:
            values = X[col].to_numpy(dtype="float64")
            bins = np.searchsorted(self.bin_edges_[col], values, side="right").astype(str)
            return pd.Series(np.where(np.isnan(values), MISSING, bins), index=X.index)
        return _labels(X[col])

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "log_ratios_")
        log_odds = np.full(len(X), self.prior_log_odds_)
        for col in self.columns_:
            log_odds += self._levels(X, col).map(self.log_ratios_[col]).fillna(0.0).to_numpy(dtype="float64")
        return 1.0 / (1.0 + np.exp(-log_odds))


def _signed_log1p(x):
    return np.sign(x) * np.log1p(np.abs(x))


def _as_labels(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.apply(_labels)


class LogisticBaseline(BaseEstimator):
    """Logistic regression on one-hot categoricals and standardised numerics.

    Numerics are median-imputed; heavy-tailed ones (skewness above `skew_threshold`) go
    through a signed log1p first. Categoricals keep missing as a level; rare levels
    (fewer than `min_frequency` rows) and levels unseen in training share one column.
    Columns are split by dtype unless `categorical` / `numeric` are given; datetime
    columns are ignored.
    """

    def __init__(self, categorical: list[str] | None = None, numeric: list[str] | None = None,
                 C: float = 1.0, max_iter: int = 1000, min_frequency: int = 10,
                 skew_threshold: float = 2.0):
        self.categorical = categorical
        self.numeric = numeric
        self.C = C
        self.max_iter = max_iter
        self.min_frequency = min_frequency
        self.skew_threshold = skew_threshold

    def fit(self, X: pd.DataFrame, y) -> "LogisticBaseline":
        y = _binary_target(y, len(X))
        self.categorical_, self.numeric_ = self._split_columns(X)
        self.constant_ = float(y.mean())
        if np.unique(y).size < 2:  # one class: logistic regression is undefined
            self.pipeline_ = None
            return self
        heavy = [c for c in self.numeric_ if self._heavy_tailed(X[c])]
        light = [c for c in self.numeric_ if c not in heavy]
        numeric_steps = [SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler()]
        parts = [("categorical", make_pipeline(
                      FunctionTransformer(_as_labels),
                      OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=self.min_frequency)),
                  self.categorical_),
                 ("numeric", make_pipeline(*numeric_steps), light),
                 ("heavy", make_pipeline(FunctionTransformer(_signed_log1p), *numeric_steps), heavy)]
        columns = ColumnTransformer([p for p in parts if p[2]], remainder="drop")
        self.pipeline_ = Pipeline([("columns", columns),
                                   ("model", LogisticRegression(C=self.C, max_iter=self.max_iter))])
        self.pipeline_.fit(self._numeric_floats(X), y)
        self.log_columns_ = heavy
        return self

    def _split_columns(self, X: pd.DataFrame) -> tuple[list[str], list[str]]:
        usable = [c for c in X.columns if not pd.api.types.is_datetime64_any_dtype(X[c])]
        categorical = self.categorical if self.categorical is not None else \
            [c for c in usable if not _is_numeric(X[c]) and (self.numeric is None or c not in self.numeric)]
        numeric = self.numeric if self.numeric is not None else \
            [c for c in usable if _is_numeric(X[c]) and c not in categorical]
        missing = [c for c in categorical + numeric if c not in X]
        if missing:
            raise ValueError(f"LogisticBaseline: columns {missing} are not in X")
        if not categorical and not numeric:
            raise ValueError("LogisticBaseline: X has no usable feature column")
        return list(categorical), list(numeric)

    def _heavy_tailed(self, values: pd.Series) -> bool:
        x = values.to_numpy(dtype="float64")
        x = x[np.isfinite(x)]
        return x.size > 2 and x.std() > 0 and float(pd.Series(x).skew()) > self.skew_threshold

    def _numeric_floats(self, X: pd.DataFrame) -> pd.DataFrame:
        # nullable ints/bools hold pd.NA, which the imputer cannot see; make them float NaN
        X = X[self.categorical_ + self.numeric_].copy()
        for c in self.numeric_:
            X[c] = X[c].astype("float64")
        return X

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "constant_")
        if self.pipeline_ is None:
            return np.full(len(X), self.constant_)
        return self.pipeline_.predict_proba(self._numeric_floats(X))[:, 1]


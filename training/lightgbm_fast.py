"""LightGBM's fast path: one float matrix per request shared by every booster call, and
one thread for request-sized inputs.

LightGBM converts a pandas frame itself on every `predict` (codes of the training
categories, floats). The models of `training.models` make that matrix once here and hand
it to the five predict calls of a score (close, contributions, three quantiles); tests
hold it equal to LightGBM's own conversion (tests/serving/test_fast_paths.py).

`Booster.predict` also builds a new predictor object per call (a copy of its parameters,
two C calls, the parameter string): ~40 us, a tenth of a one-deal request's four calls.
`predict_booster` keeps one per booster and parameters (`_inner_predictor`) and calls it as
`Booster.predict` would (the same C call: identical output, tested).
"""
from __future__ import annotations

import weakref

import lightgbm as lgb
import numpy as np
import pandas as pd
from lightgbm.basic import _InnerPredictor

# Below this many rows a prediction runs on one thread: starting OpenMP's team costs more
# (~5-10 ms on a busy machine) than walking a few hundred trees for a request's deals.
SINGLE_THREAD_ROWS = 5000
# SHAP contributions cost ~0.3 ms a row (TreeSHAP), so threads pay off much sooner.
SINGLE_THREAD_CONTRIB_ROWS = 100


def lgb_matrix(X: pd.DataFrame, pandas_categorical: list | None) -> np.ndarray:
    """X as LightGBM's own pandas conversion makes it: categorical columns as codes of the
    training categories (missing or unseen -> NaN), the float64 columns as they are.

    Only for frames whose other columns are all float64 (see `matrix_ready`): LightGBM
    would pick another matrix dtype for, say, float32 columns.
    """
    is_cat = [isinstance(dtype, pd.CategoricalDtype) for dtype in X.dtypes]
    if len(pandas_categorical or []) != sum(is_cat):
        raise ValueError(f"the feature frame has {sum(is_cat)} categorical columns; the model was trained "
                         f"with {len(pandas_categorical or [])}")
    out = np.empty((len(X), X.shape[1]), dtype="float64")
    numeric = [j for j, cat in enumerate(is_cat) if not cat]
    if numeric:  # one block conversion: per-column access costs ~20 us a column
        out[:, numeric] = X.iloc[:, numeric].to_numpy(dtype="float64", na_value=np.nan)
    for j, train in zip([j for j, cat in enumerate(is_cat) if cat], pandas_categorical or []):
        column = X.iloc[:, j]
        if not _same_levels(column.cat.categories, train):
            column = column.cat.set_categories(train)
        codes = column.cat.codes.to_numpy()
        out[:, j] = np.where(codes >= 0, codes, np.nan)
    return out


def matrix_ready(X: pd.DataFrame) -> bool:
    """Whether `lgb_matrix` gives exactly LightGBM's conversion: categoricals plus float64."""
    return all(isinstance(dtype, pd.CategoricalDtype) or dtype == np.float64 for dtype in X.dtypes)


def _same_levels(levels: pd.Index, train: list) -> bool:
    """Whether a column's categories are the booster's list already (then its codes are)."""
    return len(levels) == len(train) and levels.tolist() == list(train)


def predict_booster(booster: lgb.Booster, X: pd.DataFrame | np.ndarray, feature_names: list[str],
                    **kwargs) -> np.ndarray:
    """booster.predict on a frame (converted here) or on an `lgb_matrix` already made;
    one thread for request-sized inputs."""
    if isinstance(X, pd.DataFrame) and matrix_ready(X[feature_names]):
        X = lgb_matrix(X[feature_names], booster.pandas_categorical)
    elif isinstance(X, pd.DataFrame):
        X = X[feature_names]  # LightGBM converts it
    if len(X) <= (SINGLE_THREAD_CONTRIB_ROWS if kwargs.get("pred_contrib") else SINGLE_THREAD_ROWS):
        kwargs["num_threads"] = 1
    if not isinstance(X, np.ndarray) or set(kwargs) - PREDICT_ARGUMENTS - {"num_threads"}:
        return booster.predict(X, **kwargs)
    num_iteration = kwargs.get("num_iteration")
    return _inner_predictor(booster, kwargs.get("num_threads")).predict(
        X, num_iteration=booster.best_iteration if num_iteration is None else num_iteration,
        raw_score=kwargs.get("raw_score", False), pred_leaf=kwargs.get("pred_leaf", False),
        pred_contrib=kwargs.get("pred_contrib", False))


# `Booster.predict`'s own arguments; any other keyword is a prediction parameter
PREDICT_ARGUMENTS = frozenset({"num_iteration", "raw_score", "pred_leaf", "pred_contrib"})
_PREDICTORS: "weakref.WeakKeyDictionary[lgb.Booster, dict]" = weakref.WeakKeyDictionary()


def _inner_predictor(booster: lgb.Booster, num_threads: int | None) -> _InnerPredictor:
    """The predictor `Booster.predict(..., num_threads=num_threads)` would build, built once
    per booster (and model handle: a booster reloaded in place gets a new one)."""
    key = (booster._handle.value, num_threads)
    found = _PREDICTORS.setdefault(booster, {})
    if key not in found:
        found[key] = _InnerPredictor.from_booster(booster, {} if num_threads is None else {"num_threads": num_threads})
    return found[key]


def shared_matrix(X: pd.DataFrame, *models) -> pd.DataFrame | np.ndarray:
    """One `lgb_matrix` for several LightGBM models trained on the same features and
    categories (the predictor's close and time models); X itself otherwise (baselines)."""
    boosters = []
    for model in models:
        if model is None:
            continue
        if list(getattr(model, "feature_names_in_", [])) != list(X.columns):
            return X
        found = [getattr(model, "booster_", None)] if hasattr(model, "booster_") else getattr(model, "boosters_", [None])
        if any(b is None for b in found):
            return X
        boosters.extend(found)
    if not boosters or any(b.pandas_categorical != boosters[0].pandas_categorical for b in boosters[1:]) \
            or not matrix_ready(X):
        return X
    return lgb_matrix(X, boosters[0].pandas_categorical)

"""LightGBM's fast path: one float matrix per request shared by every booster call, and
one thread for request-sized inputs.

LightGBM converts a pandas frame itself on every `predict` (codes of the training
categories, floats). The models of `training.models` make that matrix once here and hand
it to the five predict calls of a score (close, contributions, three quantiles); tests
hold it equal to LightGBM's own conversion (tests/serving/test_fast_paths.py).

`Booster.predict` also builds a new predictor object per call (a copy of its parameters,
two C calls, the parameter string): ~40 us, a tenth of a one-deal request's four calls.
`predict_booster` keeps one per booster and parameters (`_inner_predictor`) and calls it as
`Booster.predict` would (the same C call: identical output, tested). One row (a one-deal
request) goes to LightGBM's single-row C call with a configuration made once per booster and
kind of prediction (`_OneRow`): no per-call checks, buffers or parameter parsing in Python,
~15-25 us a call instead of ~50-65 (the same trees walked: identical output, tested).
"""
from __future__ import annotations

import ctypes
import threading
import weakref

import lightgbm as lgb
import numpy as np
import pandas as pd
from lightgbm.basic import _LIB, _InnerPredictor, _c_str, _safe_call

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
    num_iteration = booster.best_iteration if num_iteration is None else num_iteration
    raw_score, pred_leaf, pred_contrib = (kwargs.get(k, False) for k in ("raw_score", "pred_leaf", "pred_contrib"))
    predictor = _inner_predictor(booster, kwargs.get("num_threads"))
    if X.shape[0] == 1 and X.ndim == 2 and X.dtype == np.float64 and not pred_contrib:
        kind = _PREDICT_LEAF if pred_leaf else _PREDICT_RAW if raw_score else _PREDICT_NORMAL
        return _one_row(booster, predictor, kind, num_iteration, X.shape[1]).predict(X)
    return predictor.predict(X, num_iteration=num_iteration, raw_score=raw_score, pred_leaf=pred_leaf,
                             pred_contrib=pred_contrib)


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


# LightGBM's C API prediction kinds (c_api.h) and float64 data
_PREDICT_NORMAL, _PREDICT_RAW, _PREDICT_LEAF, _DTYPE_FLOAT64 = 0, 1, 2, 1


class _OneRow:
    """LightGBM's single-row prediction (`LGBM_BoosterPredictForMatSingleRowFast`) for one
    booster, kind of prediction, iteration count, column count and the parameters of
    `predictor` (its `pred_parameter`, as `Booster.predict` passes them). Returns what
    `_InnerPredictor.predict` returns for a one-row float64 matrix."""

    def __init__(self, booster: lgb.Booster, predictor: _InnerPredictor, kind: int, num_iteration: int, ncol: int):
        self.handle = ctypes.c_void_p()
        _safe_call(_LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
            booster._handle, ctypes.c_int(kind), ctypes.c_int(0), ctypes.c_int(num_iteration),
            ctypes.c_int(_DTYPE_FLOAT64), ctypes.c_int32(ncol), _c_str(predictor.pred_parameter),
            ctypes.byref(self.handle)))
        weakref.finalize(self, _LIB.LGBM_FastConfigFree, self.handle)
        self.leaf = kind == _PREDICT_LEAF
        self.size = booster.num_trees() if self.leaf else booster.num_model_per_iteration()  # the most it writes
        self.lock = threading.Lock()  # one call at a time per configuration

    def predict(self, X: np.ndarray) -> np.ndarray:
        row = np.ascontiguousarray(X[0])
        out = np.empty(self.size, dtype=np.float64)
        written = ctypes.c_int64(0)
        with self.lock:
            _safe_call(_LIB.LGBM_BoosterPredictForMatSingleRowFast(
                self.handle, row.ctypes.data_as(ctypes.c_void_p), ctypes.byref(written),
                out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))))
        out = out[:written.value]
        if self.leaf:
            return out.astype(np.int32).reshape(1, -1)
        return out if written.value == 1 else out.reshape(1, -1)


def _one_row(booster: lgb.Booster, predictor: _InnerPredictor, kind: int, num_iteration: int, ncol: int) -> _OneRow:
    """The `_OneRow` of these settings, made once per booster and model handle (as `_inner_predictor`)."""
    key = ("one row", booster._handle.value, predictor.pred_parameter, kind, num_iteration, ncol)
    found = _PREDICTORS.setdefault(booster, {})
    if key not in found:
        found[key] = _OneRow(booster, predictor, kind, num_iteration, ncol)
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

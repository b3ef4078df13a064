"""Per-deal explanations: LightGBM `pred_contrib` turned into sentences a sales rep reads.

For each deal, the top positive and negative contributions (in log-odds) become short
sentences that compare the deal with won deals from training ("34 days in proposal,
longer than 85 % of won deals at that stage").

`explain` is on the scoring path of every request: the factors are chosen for all rows
at once (one argsort), and only the <= 2 * top_k chosen values per row are read and
formatted, from plain Python values (one `.tolist()` per column used), with percentiles
by `bisect` on the grids as Python lists; a numpy call per value would cost more than the
sentence itself.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from typing import Callable, Mapping

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

GRID = np.linspace(0, 1, 101)


AGE_FEATURES = ("deal_age_days", "days_in_stage")  # never a reason to win beyond every won deal's
STAGE_POSITION = {"stage_index": "is in {stage}", "furthest_stage_index": "has reached {stage}"}


def _fmt(value, whole: bool = False) -> str:
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "unknown"
        if whole or abs(value) >= 100 or float(value).is_integer():
            return f"{value:,.0f}"
        return f"{value:.2f}"
    return str(value)


def _whole(feature: str) -> bool:
    """Counts and day figures read better without decimals."""
    return "days" in feature or feature.startswith(("activities_", "stage_changes", "close_date_pushes"))


FeatureRows = pd.DataFrame | Mapping[str, np.ndarray]


class FactorExplainer(BaseEstimator):
    """Turns contribution rows into the top `top_k` positive and negative factors."""

    def __init__(self, top_k: int = 3, stage_column: str = "stage", days_in_stage_column: str = "days_in_stage"):
        self.top_k = top_k
        self.stage_column = stage_column
        self.days_in_stage_column = days_in_stage_column

    def fit(self, X_won: pd.DataFrame, describe: Callable[[str], str]) -> "FactorExplainer":
        """Learn reference distributions of each numeric feature among won deals: percentile
        grids as Python lists, the form `_percentile` searches (see the module docstring)."""
        self.labels_ = {c: describe(c) for c in X_won.columns}
        stage_dtype = X_won[self.stage_column].dtype if self.stage_column in X_won else None
        self.stages_ = [str(c) for c in stage_dtype.categories] if isinstance(stage_dtype, pd.CategoricalDtype) else []
        self.grids_ = {}
        for col in X_won.columns:
            if pd.api.types.is_numeric_dtype(X_won[col]) and not isinstance(X_won[col].dtype, pd.CategoricalDtype):
                vals = X_won[col].to_numpy(dtype=float)
                vals = vals[np.isfinite(vals)]
                if len(vals):
                    self.grids_[col] = np.quantile(vals, GRID).tolist()
        self.stage_grids_ = {}
        if {self.stage_column, self.days_in_stage_column} <= set(X_won.columns):
            for stage, days in X_won.groupby(self.stage_column, observed=True)[self.days_in_stage_column]:
                vals = days.to_numpy(dtype=float)
                vals = vals[np.isfinite(vals)]
                if len(vals) >= 20:
                    self.stage_grids_[str(stage)] = np.quantile(vals, GRID).tolist()
        return self

    def sentence(self, feature: str, value, stage: str | None, impact: float = 0.0) -> str:
        """One short sentence about one feature value, compared with won deals."""
        label = self.labels_.get(feature, feature.replace("_", " "))
        known = isinstance(value, (int, float, np.number)) and math.isfinite(value)
        if feature in STAGE_POSITION and known and 0 <= int(value) < len(self.stages_):
            return f"the deal {STAGE_POSITION[feature].format(stage=self.stages_[int(value)])}"
        grids, stage_grids = self.grids_, self.stage_grids_
        if feature == self.days_in_stage_column and stage in stage_grids and known:
            pct = _percentile(stage_grids[stage], value)
            return (f"{_fmt(value, True)} days in {stage}, longer than {pct} % of won deals at that stage"
                    if pct >= 50 else f"{_fmt(value, True)} days in {stage}, quicker than {100 - pct} % of won deals")
        if feature in grids and known:
            pct = _percentile(grids[feature], float(value))
            side = f"higher than {pct} % of won deals" if pct >= 50 else f"lower than {100 - pct} % of won deals"
            return f"{label}: {_fmt(value, _whole(feature))}, {side}"
        if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
            return f"{label}: not recorded"
        trend = "deals like this win more often" if impact > 0 else "deals like this win less often"
        return f"{label} is {value}: {trend}"

    def explain(self, X: FeatureRows, contributions: np.ndarray) -> list[dict]:
        """Top factors per row: {"positive": [...], "negative": [...]}, each item
        {feature, value, impact, sentence} with impact in log-odds.

        X: the feature frame, or (the serving fast path, no frame per request) a dict
        {feature: 1-D array} in feature order, numeric features as float arrays and
        categorical ones as object arrays of the category strings or None.
        contributions: (n, >= n_features) per-feature contributions in X's column order
        (a trailing bias column is ignored)."""
        check_is_fitted(self, "labels_")
        rows = _Rows(X, self.stage_column)
        contrib = np.asarray(contributions)
        if contrib.ndim != 2 or contrib.shape[0] != rows.n or contrib.shape[1] < len(rows.names):
            raise ValueError(f"contributions of shape {contrib.shape} do not match {rows.n} rows of "
                             f"{len(rows.names)} features")
        contrib = self._no_age_beyond_won(rows, contrib[:, : len(rows.names)])
        k = min(self.top_k, len(rows.names))
        order = np.argsort(contrib, axis=1)
        candidates = np.concatenate([order[:, ::-1][:, :k], order[:, :k]], axis=1)  # k highest, then k lowest
        impact = np.take_along_axis(contrib, candidates, axis=1)
        keep = np.concatenate([impact[:, :k] > 0, impact[:, k:] < 0], axis=1)
        row, _ = np.nonzero(keep)  # row-major: each row's positives, then its negatives
        features, impacts = candidates[keep].tolist(), impact[keep]
        values, sentences = self._describe(rows, row.tolist(), features, impacts.tolist())
        items = [{"feature": rows.names[j], "value": v, "impact": c, "sentence": s}
                 for j, v, c, s in zip(features, values, _round(impacts, 4), sentences)]
        return _split_rows(items, keep[:, :k].sum(axis=1).tolist(), keep.sum(axis=1).tolist())

    def _no_age_beyond_won(self, rows: "_Rows", contrib: np.ndarray) -> np.ndarray:
        """Contributions with the positive ones of an age (`AGE_FEATURES`) beyond every won
        deal seen in training (its stage's won days when known) set to 0: an age no won deal
        ever reached is never shown as a reason to win (a copy; the score is unchanged)."""
        out = None
        for feature in AGE_FEATURES:
            if feature not in rows.names or feature not in self.grids_:
                continue
            j = rows.names.index(feature)
            value = np.asarray(rows.column(j), dtype="float64")
            limit = np.full(rows.n, self.grids_[feature][-1])
            if feature == self.days_in_stage_column and self.stage_grids_ and rows.stage_position is not None:
                stage = pd.Series(rows.column(rows.stage_position), dtype=object).astype("string")
                limit = stage.map({s: g[-1] for s, g in self.stage_grids_.items()}).astype("float64") \
                    .fillna(self.grids_[feature][-1]).to_numpy()
            beyond = (value > limit) & (contrib[:, j] > 0)
            if beyond.any():
                out = contrib.copy() if out is None else out
                out[beyond, j] = 0.0
        return contrib if out is None else out

    def _describe(self, rows: "_Rows", row: list[int], feature: list[int], impact: list[float]
                  ) -> tuple[list, list[str]]:
        """The value and sentence of each chosen factor. The branches of `sentence` in its
        order, for the values `_plain` leaves (float, int, str or None), with each feature's
        lookups done once and sentences that depend only on the feature, the category or
        stage and the sign written once."""
        stage_grids = self.stage_grids_
        plans: dict[int, tuple] = {}
        memo: dict[tuple, str] = {}
        values, sentences = [], []
        for i, j, effect in zip(row, feature, impact):
            label, position, is_days, grid, whole = plans.get(j) or plans.setdefault(j, self._plan(rows.names[j]))
            raw = rows.column(j)[i]
            value = (None if raw != raw else raw) if type(raw) is float else _plain(raw)  # NaN is None
            known = value is not None and not isinstance(value, str) and math.isfinite(value)
            stage = _stage(rows.stage(i)) if known and is_days else None
            if known and position is not None and 0 <= int(value) < len(self.stages_):
                key = (j, int(value))
                sentence = memo.get(key) or memo.setdefault(
                    key, f"the deal {position.format(stage=self.stages_[int(value)])}")
            elif stage in stage_grids:  # known days in a stage with a reference
                sentence = f"{_fmt(value, True)} days in {stage}, {DAYS_SIDE[_percentile(stage_grids[stage], value)]}"
            elif known and grid is not None:
                sentence = f"{label}: {_fmt(value, whole)}, {VALUE_SIDE[_percentile(grid, float(value))]}"
            elif value is None or isinstance(value, str):
                key = (j, value, effect > 0)
                sentence = memo.get(key) or memo.setdefault(key, _plain_sentence(label, value, effect))
            else:
                sentence = _plain_sentence(label, value, effect)
            values.append(value)
            sentences.append(sentence)
        return values, sentences

    def _plan(self, feature) -> tuple:
        """What `sentence` looks up about a feature: (label, position template, is days in
        stage, grid, whole numbers)."""
        name = str(feature)
        return (self.labels_.get(feature, name.replace("_", " ")), STAGE_POSITION.get(name),
                feature == self.days_in_stage_column, self.grids_.get(feature), _whole(name))


class _Rows:
    """Row-wise access to a feature frame or dict of columns, one `.tolist()` per column
    on first use: Python floats, ints and strings, never a numpy scalar per value."""

    def __init__(self, X: FeatureRows, stage_column: str):
        if isinstance(X, pd.DataFrame):
            self.names = list(X.columns)
            self._source = lambda j: X.iloc[:, j]
            self.n = len(X)
        else:
            self.names = list(X)
            arrays = list(X.values())
            self._source = arrays.__getitem__
            self.n = len(arrays[0]) if arrays else 0
            if any(len(a) != self.n for a in arrays):
                raise ValueError(f"feature columns of unequal lengths: {sorted({len(a) for a in arrays})}")
        self._columns: dict[int, list] = {}
        self.stage_position = self.names.index(stage_column) if stage_column in self.names else None

    def column(self, j: int) -> list:
        found = self._columns.get(j)
        if found is None:
            source = self._source(j)
            found = self._columns[j] = source.tolist() if hasattr(source, "tolist") else list(source)
        return found

    def stage(self, i: int):
        return None if self.stage_position is None else self.column(self.stage_position)[i]


def _split_rows(items: list[dict], n_positive: list[int], n_total: list[int]) -> list[dict]:
    """Cut the flat factor list into each row's {"positive", "negative"}."""
    out, start = [], 0
    for pos, total in zip(n_positive, n_total):
        out.append({"positive": items[start:start + pos], "negative": items[start + pos:start + total]})
        start += total
    return out


def _plain(value):
    """A JSON-ready value: float, int, str or None (NaN and NA are None)."""
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if value is pd.NA or value is None:
        return None
    return str(value)


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and math.isnan(value))


def _stage(stage) -> str | None:
    return None if _missing(stage) else str(stage)


def _plain_sentence(label: str, value, impact: float) -> str:
    if value is None:
        return f"{label}: not recorded"
    trend = "deals like this win more often" if impact > 0 else "deals like this win less often"
    return f"{label} is {value}: {trend}"


# the comparison ending a sentence, for each percentile 0..100
VALUE_SIDE = [f"higher than {pct} % of won deals" if pct >= 50 else f"lower than {100 - pct} % of won deals"
              for pct in range(101)]
DAYS_SIDE = [f"longer than {pct} % of won deals at that stage" if pct >= 50
             else f"quicker than {100 - pct} % of won deals" for pct in range(101)]


def _percentile(grid: list, value: float) -> int:
    """Share of the grid at or below value, in whole percent. bisect_right on the grid as a
    list is np.searchsorted(side="right") (the same binary search), ~20x cheaper on one value."""
    return round(100 * bisect_right(grid, value) / len(grid))


def _round(x: np.ndarray, digits: int) -> list[float]:
    """[round(v, digits) for v in x], vectorised. numpy's rint(v * 10**d) / 10**d is the
    same float as Python's correctly rounded round() unless v * 10**d lands near a half:
    below 1e9 the product is off by < 1.2e-7, so outside 1e-6 of a half it rounds the same
    way, and n / 10**d is the float nearest n * 10**-d in both. Near-halves, huge and
    non-finite values (a few, if any) go through Python's round."""
    scale = 10.0 ** digits
    x = np.asarray(x, dtype=float)
    scaled = x * scale
    with np.errstate(invalid="ignore"):  # inf - inf: NaN, which counts as doubtful
        doubtful = ~(np.abs(np.abs(scaled - np.trunc(scaled)) - 0.5) > 1e-6) | ~(np.abs(scaled) < 1e9)
    result = (np.rint(scaled) / scale).tolist()
    for i in np.flatnonzero(doubtful).tolist():
        result[i] = round(float(x[i]), digits)
    return result

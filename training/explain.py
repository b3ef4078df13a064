"""Per-deal explanations: the close model's contributions turned into reasons a sales rep reads.

For each deal, the top positive and negative contributions (in log-odds) become one
sentence each (words in `training/sentences.py`), compared with won deals from training
where that helps ("34 days in proposal, 3.2x the usual time, longer than 85 % of won
deals at that stage"). What is a reason:
- a feature that is the same for every deal scored at one time (`SHARED`: the overall win
  rate, the calendar) is not a fact about the deal: never a reason;
- one fact, one factor (`MERGED`): the stage, its position, the furthest stage reached and
  the usual time in the stage are one "stage" factor, days in stage and time in stage
  versus the usual time another, the amount and its log a third; their contributions are
  summed into the first feature of the group;
- a missing value is never a reason to win (`_reason`); lowering the score, it is said to be
  missing and why that matters.

`explain` is on the scoring path of every request: the candidates are chosen for all rows
at once (one argsort), and only those read are formatted, from plain Python values (one
`.tolist()` per column used), with percentiles by `bisect` on the grids as Python lists; a
numpy call per value would cost more than the sentence itself.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from features.definitions import CALENDAR_FEATURES
from training import sentences as say

GRID = np.linspace(0, 1, 101)
SHARED = frozenset({"global_win_rate", *CALENDAR_FEATURES})
MERGED = {"stage_index": "stage", "furthest_stage_index": "stage", "stage_mean_dwell_days": "stage",
          "stage_velocity": "days_in_stage", "log_amount": "amount"}  # feature -> the factor it is part of
SLACK = 3  # candidates read beyond top_k per side, in case some are no reasons (a missing value raising the score)

FeatureRows = pd.DataFrame | Mapping[str, np.ndarray]
Writer = Callable[[Any, float, say.Other], str]  # (known value, impact, other) -> sentence


class FactorExplainer(BaseEstimator):
    """Turns contribution rows into the top `top_k` positive and negative factors."""

    def __init__(self, top_k: int = 3, stage_column: str = "stage", days_in_stage_column: str = "days_in_stage"):
        self.top_k = top_k
        self.stage_column = stage_column
        self.days_in_stage_column = days_in_stage_column

    def fit(self, X_won: pd.DataFrame, describe: Callable[[str], str]) -> "FactorExplainer":
        """Learn reference distributions of each numeric feature among won deals: percentile
        grids as Python lists, the form `sentences.compare` searches (see the module docstring)."""
        self.labels_ = {c: describe(c) for c in X_won.columns}
        stage_dtype = X_won[self.stage_column].dtype if self.stage_column in X_won else None
        self.stages_ = [str(c) for c in stage_dtype.categories] if isinstance(stage_dtype, pd.CategoricalDtype) else []
        self.grids_, self.categorical_ = {}, []
        for col in X_won.columns:
            if pd.api.types.is_numeric_dtype(X_won[col]) and not isinstance(X_won[col].dtype, pd.CategoricalDtype):
                vals = X_won[col].to_numpy(dtype=float)
                vals = vals[np.isfinite(vals)]
                if len(vals):
                    self.grids_[col] = np.quantile(vals, GRID).tolist()
            else:
                self.categorical_.append(col)
        self.stage_grids_ = {}
        if {self.stage_column, self.days_in_stage_column} <= set(X_won.columns):
            for stage, days in X_won.groupby(self.stage_column, observed=True)[self.days_in_stage_column]:
                vals = days.to_numpy(dtype=float)
                vals = vals[np.isfinite(vals)]
                if len(vals) >= 20:
                    self.stage_grids_[str(stage)] = np.quantile(vals, GRID).tolist()
        return self

    def sentence(self, feature: str, value, impact: float, other: Mapping[str, Any] | None = None) -> str | None:
        """The sentence of one factor: `feature` at `value` moving the log-odds by `impact`;
        `other`: the deal's values of other features (stage, furthest_stage_index,
        stage_velocity, global_win_rate) where the sentence uses them. None: no reason."""
        check_is_fitted(self, "labels_")
        get = {k: _plain(v) for k, v in (other or {}).items()}.get
        return self._reason(feature)(_plain(value), impact, get)

    def explain(self, X: FeatureRows, contributions: np.ndarray) -> list[dict]:
        """Top factors per row: {"positive": [...], "negative": [...]}, each item
        {feature, value, impact, sentence} with impact in log-odds (`MERGED` features summed).

        X: the feature frame, or (the serving fast path, no frame per request) a dict
        {feature: 1-D array} in feature order, numeric features as float arrays and
        categorical ones as object arrays of the category strings or None.
        contributions: (n, >= n_features) per-feature contributions in X's column order
        (a trailing bias column is ignored)."""
        check_is_fitted(self, "labels_")
        rows = _Rows(X, self.stage_column)
        contrib = np.asarray(contributions, dtype=float)
        names = rows.names
        if contrib.ndim != 2 or contrib.shape[0] != rows.n or contrib.shape[1] < len(names):
            raise ValueError(f"contributions of shape {contrib.shape} do not match {rows.n} rows of "
                             f"{len(names)} features")
        facts = by_fact(contrib[:, : len(names)], names)
        k = min(self.top_k, len(names))
        m = min(k + SLACK, len(names))
        order = np.argsort(facts, axis=1)
        sides = []
        for chosen, sign in ((order[:, ::-1][:, :m], 1), (order[:, :m], -1)):
            impact = np.take_along_axis(facts, chosen, axis=1)
            rounded = np.reshape(_round(impact.ravel(), 4), impact.shape).tolist() if impact.size else impact.tolist()
            sides.append((chosen.tolist(), (impact * sign).tolist(), rounded, sign))
        reasons: dict[int, Callable] = {}
        out = []
        for i in range(rows.n):
            get = rows.getter(i)
            row = {}
            for side, (chosen, signed, rounded, sign) in zip(("positive", "negative"), sides):
                items = row[side] = []
                for j, s, r in zip(chosen[i], signed[i], rounded[i]):
                    if len(items) == k or s <= 0:  # sorted: no further factor on this side
                        break
                    value = rows.value(i, j)
                    reason = reasons.get(j) or reasons.setdefault(j, self._reason(names[j]))
                    text = reason(value, s * sign, get)
                    if text is not None:
                        items.append({"feature": names[j], "value": value, "impact": r, "sentence": text})
            out.append(row)
        return out

    def _reason(self, feature: str) -> Callable[[Any, float, say.Other], str | None]:
        """The sentence writer of one feature: None where its value is no reason."""
        label = self.labels_.get(feature, feature.replace("_", " "))
        write = self._writer(feature, label)
        gone = say.missing(feature, label, feature in self.categorical_)

        def reason(value, impact: float, get: say.Other) -> str | None:
            if value is None or (type(value) is float and not math.isfinite(value)):
                return None if impact > 0 else gone  # a missing value is never a reason to win
            # further rules that make a known value no reason to win go here, before the sentence
            return write(value, impact, get)
        return reason

    def _writer(self, feature: str, label: str) -> Writer:
        """The sentence of a known value, by the kind of fact the feature is."""
        if feature in (self.stage_column, "stage_index"):
            return lambda v, c, get: self._stage_sentence(feature, label, v, c, get)
        if feature == "furthest_stage_index":
            return lambda v, c, get: (f"the deal has reached {self._stage_name(v)}: deals that got this far "
                                      f"{say.trend(c)}" if self._stage_name(v) else say.plain(feature, label, v, None))
        if feature == self.days_in_stage_column:
            def days_in_stage(v, c, get):
                stage = self._stage_name(get(self.stage_column)) or self._stage_name(get("stage_index"))
                return say.time_in_stage(v, stage, get("stage_velocity"), self.stage_grids_.get(stage))
            return days_in_stage
        special = {"stage_velocity": say.velocity, "amount_change_ratio": say.change_ratio, "activity_trend": say.pace}
        if feature in special:
            return lambda v, c, get: say.plain(feature, label, v, None) if isinstance(v, str) else special[feature](v)
        grid = self.grids_.get(feature)
        if feature.endswith("_win_rate") and feature not in SHARED:
            return lambda v, c, get: say.category(label, v, c) if isinstance(v, str) \
                else say.group_rate(label, v, get("global_win_rate"))
        return lambda v, c, get: say.category(label, v, c) if isinstance(v, str) else say.plain(feature, label, v, grid)

    def _stage_sentence(self, feature: str, label: str, value, impact: float, get: say.Other) -> str:
        name = self._stage_name(value)
        if name is None:  # a stage position outside the model's stages
            return say.plain(feature, label, value, None)
        return say.stage(name, self._stage_name(get("furthest_stage_index")), impact)

    def _stage_name(self, value) -> str | None:
        """A stage's name from its name or its position in `stages_`."""
        if isinstance(value, str) or value is None:
            return value
        if isinstance(value, (int, float)) and math.isfinite(value) and 0 <= int(value) < len(self.stages_):
            return self.stages_[int(value)]
        return None


def by_fact(contributions: np.ndarray, names: list[str]) -> np.ndarray:
    """Contributions per fact: a copy with `SHARED` features at 0 and each `MERGED` group
    summed into its first feature present (the others 0); NaN counts as 0."""
    index = {name: j for j, name in enumerate(names)}
    facts = np.where(np.isnan(contributions), 0.0, contributions)
    shared = [j for name, j in index.items() if name in SHARED]
    facts[:, shared] = 0.0
    for head in dict.fromkeys(MERGED.values()):
        group = [index[n] for n in [head, *(m for m, h in MERGED.items() if h == head)] if n in index]
        if len(group) > 1:
            facts[:, group[0]] = facts[:, group].sum(axis=1)
            facts[:, group[1:]] = 0.0
    return facts


class _Rows:
    """Row-wise access to a feature frame or dict of columns, one `.tolist()` per column
    on first use: Python floats, ints and strings (None for missing), never a numpy scalar."""

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
        self._index = {name: j for j, name in enumerate(self.names)}

    def column(self, j: int) -> list:
        found = self._columns.get(j)
        if found is None:
            source = self._source(j)
            found = self._columns[j] = source.tolist() if hasattr(source, "tolist") else list(source)
        return found

    def value(self, i: int, j: int):
        """Row i's value of feature j, JSON-ready (NaN is None)."""
        raw = self.column(j)[i]
        return (None if raw != raw else raw) if type(raw) is float else _plain(raw)

    def getter(self, i: int) -> say.Other:
        """Row i's value of a feature by name (None if missing or not a feature)."""
        index = self._index
        return lambda name: self.value(i, index[name]) if name in index else None


def _plain(value):
    """A JSON-ready value: float, int, str or None (NaN and NA are None)."""
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, (np.integer, int)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    if value is pd.NA or value is None:
        return None
    return str(value)


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

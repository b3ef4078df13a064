"""Per-deal explanations: the close model's contributions turned into reasons a sales rep reads.

For each deal, the top positive and negative contributions (in log-odds) become one
sentence each (words in `training/sentences.py`), compared with won deals from training
where that helps ("34 days in proposal, 3.2x the usual time, longer than 85 % of won
deals at that stage"). What is a reason (`training/facts.py`):
- a feature that is the same for every deal scored at one time (`SHARED`: the overall win
  rate, the calendar) is not a fact about the deal: never a reason;
- one fact, one factor (`MERGED`): the stage, its position, the furthest stage reached and
  the usual time in the stage are one "stage" factor, days in stage and time in stage
  versus the usual time another, the amount and its log a third; their contributions are
  summed into the first feature of the group;
- a missing value is never a reason to win (`_reason`); lowering the score, it is said to be
  missing and why that matters;
- an age or a time in stage beyond every won deal seen in training is never a reason to win
  (`_no_age_beyond_won`: its positive contribution is dropped before the ranking).

`explain` is on the scoring path of every request: the candidates are chosen for all rows
at once (one argsort), and only those read are formatted, from plain Python values (one
`.tolist()` per column used), with percentiles by `bisect` on the grids as Python lists; a
numpy call per value would cost more than the sentence itself. Over 300 lines: one
explainer, whose sentence writers and row access belong together.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from features.staleness import by_name
from training import sentences as say
from training.facts import SHARED, by_fact, fact_groups

GRID = np.linspace(0, 1, 101)
AGE_FEATURES = ("deal_age_days", "days_in_stage")  # never a reason to win beyond every won deal's
SLACK = 3  # candidates read beyond top_k per side, in case some are no reasons (a missing value raising the score)
SMALL_CELLS = 64  # candidate cells up to which missing values are looked up one by one
FeatureRows = pd.DataFrame | Mapping[str, np.ndarray]


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
        self.columns_ = list(X_won.columns)
        self.facts_ = fact_groups(self.columns_)  # where `explain` finds them, for rows in this column order
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
        rows = _Rows({name: np.array([v], dtype=float if isinstance(v, float) else object)
                      for name, v in {**(other or {}), feature: value}.items()})
        j = rows.index[feature]
        if impact > 0 and self._no_reasons_to_win(rows, np.array([[j]]), np.array([[True]]))[0, 0]:
            return None
        return self._describe(rows, [0], [j], [impact])[1][0]

    def explain(self, X: FeatureRows, contributions: np.ndarray) -> list[dict]:
        """Top factors per row: {"positive": [...], "negative": [...]}, each item
        {feature, value, impact, sentence} with impact in log-odds (`MERGED` features summed).

        X: the feature frame, or (the serving fast path, no frame per request) a dict
        {feature: 1-D array} in feature order, numeric features as float arrays and
        categorical ones as object arrays of the category strings or None.
        contributions: (n, >= n_features) per-feature contributions in X's column order
        (a trailing bias column is ignored)."""
        check_is_fitted(self, "labels_")
        rows = _Rows(X)
        contrib = np.asarray(contributions, dtype=float)
        names = rows.names
        if contrib.ndim != 2 or contrib.shape[0] != rows.n or contrib.shape[1] < len(names):
            raise ValueError(f"contributions of shape {contrib.shape} do not match {rows.n} rows of "
                             f"{len(names)} features")
        contrib = self._no_age_beyond_won(rows, contrib[:, : len(names)])
        facts = by_fact(contrib, self.facts_ if names == self.columns_ else fact_groups(names))
        k = min(self.top_k, len(names))
        m = min(k + SLACK, len(names))
        order = np.argsort(facts, axis=1)
        candidates = np.concatenate([order[:, ::-1][:, :m], order[:, :m]], axis=1)  # m highest, then m lowest
        impact = np.take_along_axis(facts, candidates, axis=1)
        up, down = impact[:, :m] > 0, impact[:, m:] < 0
        up &= ~self._no_reasons_to_win(rows, candidates[:, :m], up)
        keep = np.concatenate([up & (np.cumsum(up, axis=1) <= k), down & (np.cumsum(down, axis=1) <= k)], axis=1)
        row, _ = np.nonzero(keep)  # row-major: each row's positives, then its negatives
        features, impacts = candidates[keep].tolist(), impact[keep]
        values, sentences = self._describe(rows, row.tolist(), features, impacts.tolist())
        items = [{"feature": names[j], "value": v, "impact": c, "sentence": s}
                 for j, v, c, s in zip(features, values, _round(impacts, 4), sentences)]
        return _split_rows(items, keep[:, :m].sum(axis=1).tolist(), keep.sum(axis=1).tolist())

    def _no_reasons_to_win(self, rows: "_Rows", candidates: np.ndarray, where: np.ndarray) -> np.ndarray:
        """Which candidate factors (feature positions, raising the score `where` True) are no
        reason to win, whatever their contribution: a missing (or non-finite) value. Further
        rules of that kind go here, one mask each."""
        return rows.missing(candidates, where)

    def _no_age_beyond_won(self, rows: "_Rows", contrib: np.ndarray) -> np.ndarray:
        """Contributions with the positive ones of an age (`AGE_FEATURES`) beyond every won
        deal seen in training (its stage's won days when known) set to 0: an age no won deal
        ever reached is never shown as a reason to win (a copy; the score is unchanged)."""
        out = None
        stage_position = rows.index.get(self.stage_column)
        for feature in AGE_FEATURES:
            if feature not in rows.index or feature not in self.grids_:
                continue
            j = rows.index[feature]
            value = np.asarray(rows.column(j), dtype="float64")
            limit = np.full(rows.n, self.grids_[feature][-1])
            if feature == self.days_in_stage_column and self.stage_grids_ and stage_position is not None:
                stage = np.asarray(rows.column(stage_position), dtype=object)
                limit = by_name({s: g[-1] for s, g in self.stage_grids_.items()}, stage)
                limit[np.isnan(limit)] = self.grids_[feature][-1]
            beyond = (value > limit) & (contrib[:, j] > 0)
            if beyond.any():
                out = contrib.copy() if out is None else out
                out[beyond, j] = 0.0
        return contrib if out is None else out

    def _describe(self, rows: "_Rows", row: list[int], feature: list[int], impact: list[float]
                  ) -> tuple[list, list[str]]:
        """The value and sentence of each chosen factor, feature by feature: each feature's
        writers made once, and a sentence that depends on the value and the sign of the
        impact only (`_writers`) written once per such pair in the request (zeros excepted:
        -0.0 == 0.0 as keys). A missing value is said to be missing (`_no_reasons_to_win`
        kept it from raising the score)."""
        values: list = [None] * len(row)
        sentences: list = [None] * len(row)
        if not row:
            return values, sentences
        order = np.argsort(np.asarray(feature), kind="stable")
        cuts = np.flatnonzero(np.diff(np.asarray(feature)[order])) + 1
        for group in np.split(order, cuts):
            ks = group.tolist()
            j = feature[ks[0]]
            gone, write, by_value = self._writers(rows.names[j])
            column = rows.column(j)
            written: dict[tuple, str] = {}
            for k in ks:
                i, effect, raw = row[k], impact[k], column[row[k]]
                value = values[k] = (None if raw != raw else raw) if type(raw) is float else _plain(raw)  # rows.value
                if value is None or (type(value) is float and not math.isfinite(value)):
                    sentences[k] = gone
                elif not by_value or value == 0:
                    sentences[k] = write(value, effect, i, rows)
                else:
                    key = (value, effect > 0)
                    sentences[k] = written.get(key) or written.setdefault(key, write(value, effect, i, rows))
        return values, sentences

    def _writers(self, feature: str) -> tuple[str, Callable[[Any, float, int, "_Rows"], str], bool]:
        """(the sentence of a missing value, the writer of known ones, whether that writer's
        sentence depends on the value and the sign of the impact only) of one feature."""
        label = self.labels_.get(feature, feature.replace("_", " "))
        return say.missing(feature, label, feature in self.categorical_), *self._known(feature, label)

    def _known(self, feature: str, label: str) -> tuple[Callable[[Any, float, int, "_Rows"], str], bool]:
        """The sentence of a known value, by the kind of fact the feature is, and whether it
        depends on the value and the sign of the impact only (False: on other features of the row too)."""
        numeric = say.numeric(feature, label, self.grids_.get(feature))
        memo: dict[tuple, str] = {}
        number = numeric  # written once per value by `_describe`

        def text(value, impact: float) -> str:  # a category's sentence depends on the level and the sign only
            key = (value, impact > 0)
            return memo.get(key) or memo.setdefault(key, say.category(label, value, impact))

        if feature in (self.stage_column, "stage_index"):
            stages: dict[tuple, str] = {}

            def stage(value, impact, i, rows):
                name = self._stage_name(value)
                if name is None:  # a stage position outside the model's stages
                    return number(value)
                key = (name, rows.get(i, "furthest_stage_index"), impact > 0)
                return stages.get(key) or stages.setdefault(
                    key, say.stage(name, self._stage_name(key[1]), impact))
            return stage, False
        if feature == "furthest_stage_index":
            return (lambda value, impact, i, rows: say.reached(self._stage_name(value), impact)
                    if self._stage_name(value) else number(value)), True
        if feature == self.days_in_stage_column:
            def days_in_stage(value, impact, i, rows):
                name = self._stage_name(rows.get(i, self.stage_column)) or self._stage_name(rows.get(i, "stage_index"))
                return say.time_in_stage(value, name, rows.get(i, "stage_velocity"), self.stage_grids_.get(name))
            return days_in_stage, False
        ratio = {"stage_velocity": say.velocity, "amount_change_ratio": say.change_ratio, "activity_trend": say.pace}
        if feature in ratio:
            return (lambda value, impact, i, rows: text(value, impact) if isinstance(value, str)
                    else ratio[feature](value)), True
        if feature.endswith("_win_rate") and feature not in SHARED:
            rates: dict[tuple, str] = {}

            def rate(value, impact, i, rows):
                if isinstance(value, str):
                    return text(value, impact)
                key = (value, rows.get(i, "global_win_rate"))
                if value == 0 or key[1] == 0:  # -0.0 == 0.0 as keys
                    return say.group_rate(label, *key)
                return rates.get(key) or rates.setdefault(key, say.group_rate(label, *key))
            return rate, False
        if feature in self.categorical_:
            return (lambda value, impact, i, rows: text(value, impact)), True
        return (lambda value, impact, i, rows: text(value, impact) if type(value) is str else number(value)), True

    def _stage_name(self, value) -> str | None:
        """A stage's name from its name or its position in `stages_`."""
        if isinstance(value, str) or value is None:
            return value
        if isinstance(value, (int, float)) and math.isfinite(value) and 0 <= int(value) < len(self.stages_):
            return self.stages_[int(value)]
        return None


class _Rows:
    """Row-wise access to a feature frame or dict of columns, one `.tolist()` per column
    on first use: Python floats, ints and strings (None for missing), never a numpy scalar."""

    def __init__(self, X: FeatureRows):
        if isinstance(X, pd.DataFrame):
            self.names = list(X.columns)
            self._source = lambda j: X.iloc[:, j]
            self.n = len(X)
        else:
            self.names = list(X)
            arrays = list(X.values())
            self._source = arrays.__getitem__
            self.n = len(arrays[0]) if arrays else 0
            if len(set(map(len, arrays))) > 1:
                raise ValueError(f"feature columns of unequal lengths: {sorted({len(a) for a in arrays})}")
        self._columns: dict[int, list] = {}
        self.index = {name: j for j, name in enumerate(self.names)}

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

    def get(self, i: int, name: str):
        """Row i's value of a feature by name (None if missing or not a feature)."""
        j = self.index.get(name)
        return None if j is None else self.value(i, j)

    def missing(self, candidates: np.ndarray, where: np.ndarray) -> np.ndarray:
        """For each cell of `candidates` (feature positions, one row per row) marked in `where`:
        whether that row's value is missing or not finite."""
        out = np.zeros(candidates.shape, dtype=bool)
        if candidates.size <= SMALL_CELLS:  # a request of a few deals: quicker value by value
            for r, c in zip(*np.nonzero(where)):
                value = self.value(int(r), int(candidates[r, c]))
                out[r, c] = value is None or (type(value) is float and not math.isfinite(value))
            return out
        for j in np.unique(candidates[where]).tolist():
            r, c = np.nonzero(where & (candidates == j))
            source = self._source(j)
            values = source.to_numpy() if isinstance(source, pd.Series) else np.asarray(source)
            gone = ~np.isfinite(values) if values.dtype.kind == "f" else pd.isna(values)
            out[r, c] = gone[r]
        return out


def _split_rows(items: list[dict], n_positive: list[int], n_total: list[int]) -> list[dict]:
    """Cut the flat factor list into each row's {"positive", "negative"}."""
    out, start = [], 0
    for pos, total in zip(n_positive, n_total):
        out.append({"positive": items[start:start + pos], "negative": items[start + pos:start + total]})
        start += total
    return out


def _plain(value):
    """A JSON-ready value: float, int, str or None (NaN and NA are None)."""
    if type(value) is str:  # a category's level, the usual case
        return value
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

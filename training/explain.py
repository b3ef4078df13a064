"""Per-deal explanations: LightGBM `pred_contrib` turned into sentences a sales rep reads.

For each deal, the top positive and negative contributions (in log-odds) become short
sentences that compare the deal with won deals from training ("34 days in proposal,
longer than 85 % of won deals at that stage").
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

GRID = np.linspace(0, 1, 101)


STAGE_POSITION = {"stage_index": "is in {stage}", "furthest_stage_index": "has reached {stage}"}


def _fmt(value, whole: bool = False) -> str:
    if isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return "unknown"
        if whole or abs(value) >= 100 or float(value).is_integer():
            return f"{value:,.0f}"
        return f"{value:.2f}"
    return str(value)


def _whole(feature: str) -> bool:
    """Counts and day figures read better without decimals."""
    return "days" in feature or feature.startswith(("activities_", "stage_changes", "close_date_pushes"))


class FactorExplainer:
    """Turns contribution rows into the top `top_k` positive and negative factors."""

    def __init__(self, top_k: int = 3, stage_column: str = "stage", days_in_stage_column: str = "days_in_stage"):
        self.top_k = top_k
        self.stage_column = stage_column
        self.days_in_stage_column = days_in_stage_column

    def fit(self, X_won: pd.DataFrame, describe: Callable[[str], str]) -> "FactorExplainer":
        """Learn reference distributions of each numeric feature among won deals."""
        self.labels_ = {c: describe(c) for c in X_won.columns}
        stage_dtype = X_won[self.stage_column].dtype if self.stage_column in X_won else None
        self.stages_ = [str(c) for c in stage_dtype.categories] if isinstance(stage_dtype, pd.CategoricalDtype) else []
        self.grids_ = {}
        for col in X_won.columns:
            if pd.api.types.is_numeric_dtype(X_won[col]) and not isinstance(X_won[col].dtype, pd.CategoricalDtype):
                vals = X_won[col].to_numpy(dtype=float)
                vals = vals[np.isfinite(vals)]
                if len(vals):
                    self.grids_[col] = np.quantile(vals, GRID)
        self.stage_grids_ = {}
        if {self.stage_column, self.days_in_stage_column} <= set(X_won.columns):
            for stage, days in X_won.groupby(self.stage_column, observed=True)[self.days_in_stage_column]:
                vals = days.to_numpy(dtype=float)
                vals = vals[np.isfinite(vals)]
                if len(vals) >= 20:
                    self.stage_grids_[str(stage)] = np.quantile(vals, GRID)
        return self

    def _percentile(self, grid: np.ndarray, value: float) -> int:
        return int(round(100 * np.searchsorted(grid, value, side="right") / len(grid)))

    def sentence(self, feature: str, value, stage: str | None, impact: float = 0.0) -> str:
        """One short sentence about one feature value, compared with won deals."""
        label = self.labels_.get(feature, feature.replace("_", " "))
        known = isinstance(value, (int, float, np.number)) and np.isfinite(value)
        if feature in STAGE_POSITION and known and 0 <= int(value) < len(self.stages_):
            return f"the deal {STAGE_POSITION[feature].format(stage=self.stages_[int(value)])}"
        if feature == self.days_in_stage_column and stage in self.stage_grids_ and known:
            pct = self._percentile(self.stage_grids_[stage], value)
            return (f"{_fmt(value, True)} days in {stage}, longer than {pct} % of won deals at that stage"
                    if pct >= 50 else f"{_fmt(value, True)} days in {stage}, quicker than {100 - pct} % of won deals")
        if feature in self.grids_ and known:
            pct = self._percentile(self.grids_[feature], float(value))
            side = f"higher than {pct} % of won deals" if pct >= 50 else f"lower than {100 - pct} % of won deals"
            return f"{label}: {_fmt(value, _whole(feature))}, {side}"
        if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
            return f"{label}: not recorded"
        trend = "deals like this win more often" if impact > 0 else "deals like this win less often"
        return f"{label} is {value}: {trend}"

    def explain(self, X: pd.DataFrame, contributions: np.ndarray) -> list[dict]:
        """Top factors per row: {"positive": [...], "negative": [...]}, each item
        {feature, value, impact, sentence} with impact in log-odds."""
        contrib = contributions[:, : X.shape[1]]
        k = min(self.top_k, X.shape[1])
        order = np.argsort(contrib, axis=1)
        cols = list(X.columns)
        stages = X[self.stage_column].astype("string").to_numpy() if self.stage_column in X else [None] * len(X)
        values = X.to_numpy(dtype=object)  # one conversion, not a pandas row per deal
        out = []
        for i in range(len(X)):
            row = values[i]
            pos = [j for j in order[i, ::-1][:k] if contrib[i, j] > 0]
            neg = [j for j in order[i, :k] if contrib[i, j] < 0]
            out.append({side: [self._factor(cols[j], row[j], contrib[i, j], stages[i]) for j in idx]
                        for side, idx in (("positive", pos), ("negative", neg))})
        return out

    def _factor(self, feature: str, value, impact: float, stage) -> dict:
        if isinstance(value, (np.floating, float)):
            value = None if np.isnan(value) else float(value)
        elif isinstance(value, np.integer):
            value = int(value)
        elif value is pd.NA:
            value = None
        else:
            value = str(value) if value is not None else None
        stage = None if stage is pd.NA or stage is None else str(stage)
        return {"feature": feature, "value": value, "impact": round(float(impact), 4),
                "sentence": self.sentence(feature, np.nan if value is None else value, stage, impact)}

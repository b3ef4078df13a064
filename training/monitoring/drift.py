"""Drift between the training reference (`reference`) and recently scored deals: PSI per
feature and of the score, overall and per as-of week.

PSI = sum over bins of (a - e) * ln(a / e), shares floored at 1e-4. Stated thresholds
(the usual ones, configurable): < 0.1 stable, 0.1-0.25 moderate shift (warn), >= 0.25 a
significant shift (alert). A window with fewer than `min_rows` rows is not judged.
The reference holds the features to judge (`reference.deal_features`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from training.monitoring.reference import shares

FLOOR = 1e-4


@dataclass(frozen=True)
class DriftThresholds:
    warn: float = 0.1
    alert: float = 0.25
    min_rows: int = 200

    def level(self, value: float | None) -> str:
        if value is None or not np.isfinite(value):
            return "not judged"
        return "alert" if value >= self.alert else "warn" if value >= self.warn else "ok"


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two share vectors over the same bins."""
    e = np.maximum(np.asarray(expected, dtype="float64"), FLOOR)
    a = np.maximum(np.asarray(actual, dtype="float64"), FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def drift_table(reference: dict, features: pd.DataFrame, probability: np.ndarray,
                thresholds: DriftThresholds) -> pd.DataFrame:
    """One row per feature (those in both) and one for the score: psi and level."""
    rows = [(name, psi(ref["shares"], shares(features[name], ref)))
            for name, ref in reference["features"].items() if name in features]
    score_ref = reference["score"]
    rows.append(("(score)", psi(score_ref["shares"], shares(pd.Series(probability), score_ref))))
    table = pd.DataFrame(rows, columns=["feature", "psi"])
    if len(features) < thresholds.min_rows:
        table["psi"] = np.nan
    table["level"] = [thresholds.level(v) for v in table["psi"]]
    return table.sort_values("psi", ascending=False, ignore_index=True, na_position="last")


def drift_by_window(reference: dict, features: pd.DataFrame, probability: np.ndarray,
                    thresholds: DriftThresholds, freq: str = "W-SUN") -> pd.DataFrame:
    """Per as-of window (weeks from Monday by default): rows, the score's PSI, the largest feature PSI
    and its feature, and the window's level (the worse of the two)."""
    period = pd.to_datetime(features["as_of"]).dt.to_period(freq).dt.start_time
    out = []
    for start, rows in features.groupby(period.to_numpy(), sort=True):
        table = drift_table(reference, rows, probability[rows.index.to_numpy()], thresholds)
        score = table.loc[table["feature"] == "(score)", "psi"].iloc[0]
        feats = table[table["feature"] != "(score)"]
        top = feats.iloc[0] if len(feats) else None
        worst = max(score if np.isfinite(score) else -1, top["psi"] if top is not None and np.isfinite(top["psi"])
                    else -1)
        out.append({"window_start": pd.Timestamp(start), "rows": len(rows), "score_psi": score,
                    "top_feature": None if top is None else top["feature"],
                    "top_feature_psi": None if top is None else top["psi"],
                    "level": thresholds.level(worst if worst >= 0 else None)})
    return pd.DataFrame(out, columns=["window_start", "rows", "score_psi", "top_feature", "top_feature_psi", "level"])

"""Realised performance of logged scores, and what the model expects of itself.

- `realised`: for scores whose deal has closed since (won = 1, lost = 0): Brier, ECE,
  AUC, n, won rate, the reliability curve (`training.evaluate`'s metrics, 10 equal-width
  bins), by any grouping (model version, segment, score decile).
- `expected`: the Brier and ECE the model predicts for a set of scores if its own
  probabilities are calibrated: E[Brier] = mean p(1 - p) exactly, with its standard error;
  E[ECE] by simulating outcomes y ~ Bernoulli(p) (ECE of a perfectly calibrated model is
  not 0 on a finite sample). Computed on every score (open deals included): the estimate
  before outcomes arrive, then put beside the realised figures of the same rows.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from features.jsonsafe import finite_or_none
from training.evaluate import brier, expected_calibration_error, reliability_table, roc_auc

N_SIMULATIONS = 200
N_BINS = 10  # as training.evaluate's ECE
MAX_SIMULATED_ROWS = 20_000  # a random subset beyond this: the ECE estimate barely moves


def realised(y: np.ndarray, p: np.ndarray) -> dict:
    """Realised metrics of closed deals' scores; None where undefined."""
    y, p = np.asarray(y, dtype="float64"), np.asarray(p, dtype="float64")
    curve = reliability_table(y, p) if y.size else pd.DataFrame()
    return {"n": int(y.size), "won_rate": finite_or_none(y.mean()) if y.size else None,
            "mean_probability": finite_or_none(p.mean()) if p.size else None,
            "brier": finite_or_none(brier(y, p)), "ece": finite_or_none(expected_calibration_error(y, p)),
            "auc": finite_or_none(roc_auc(y, p)),
            "reliability": [] if curve.empty else _records(curve[curve["count"] > 0])}


def expected(p: np.ndarray, seed: int = 0) -> dict:
    """Brier and ECE expected under the model's own calibration, with 2-SE bounds for the Brier."""
    p = np.asarray(p, dtype="float64")
    if not p.size:
        return {"n": 0, "brier": None, "brier_se": None, "ece": None}
    var = p * (1 - p)  # E[(y - p)^2]; Var[(y - p)^2] = p(1-p)(1-2p)^2
    rng = np.random.default_rng(seed)
    sim = p if p.size <= MAX_SIMULATED_ROWS else rng.choice(p, MAX_SIMULATED_ROWS, replace=False)
    onehot = np.zeros((sim.size, N_BINS))
    onehot[np.arange(sim.size), np.clip((sim * N_BINS).astype(int), 0, N_BINS - 1)] = 1.0
    won = (rng.random((N_SIMULATIONS, sim.size)) < sim).astype(float) @ onehot  # won per draw and bin
    eces = np.abs(won - sim @ onehot).sum(axis=1) / sim.size  # = training.evaluate's ECE of each draw
    scale = np.sqrt(sim.size / p.size)  # ECE's sampling noise shrinks like 1/sqrt(n)
    return {"n": int(p.size), "brier": float(var.mean()),
            "brier_se": float(np.sqrt(np.sum(var * (1 - 2 * p) ** 2)) / p.size),
            "ece": float(np.mean(eces) * scale)}


def grouped(frame: pd.DataFrame, by: str) -> list[dict]:
    """`realised` per value of `by` (closed rows: columns y, probability)."""
    return [{by: str(key), **{k: v for k, v in realised(rows["y"], rows["probability"]).items() if k != "reliability"}}
            for key, rows in frame.groupby(by, sort=True, observed=True)]


def deciles(p: np.ndarray) -> np.ndarray:
    """Score decile 1-10 of each probability among these rows (10 = highest)."""
    ranks = pd.Series(p).rank(method="first", pct=True).to_numpy()
    return np.clip(np.ceil(ranks * 10), 1, 10).astype(int)


def _records(frame: pd.DataFrame) -> list[dict]:
    return [{k: (finite_or_none(v) if isinstance(v, float) else int(v) if isinstance(v, np.integer) else v)
             for k, v in row.items()} for row in frame.to_dict(orient="records")]

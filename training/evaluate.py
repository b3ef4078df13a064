"""Evaluation metrics: close probability (discrimination + calibration) and time to close.

Pure functions over numpy arrays: `y` in {0, 1}, `p` in [0, 1]. Reports are JSON-safe
(plain floats, `None` where a metric is undefined, e.g. AUC on one class), so they can
go straight into MLflow and the `--metrics-out` file.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from features.jsonsafe import finite_or_none

LOG_LOSS_EPS = 1e-15


def _arrays(y, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype="float64").ravel()
    p = np.asarray(p, dtype="float64").ravel()
    if y.shape != p.shape:
        raise ValueError(f"y has {y.size} values but p has {p.size}: score the same rows you label")
    return y, p


def _two_classes(y: np.ndarray) -> bool:
    return y.size > 0 and 0 < y.sum() < y.size


def roc_auc(y, p) -> float:
    """Area under the ROC curve; NaN when only one class is present."""
    y, p = _arrays(y, p)
    return float(roc_auc_score(y, p)) if _two_classes(y) else float("nan")


def pr_auc(y, p) -> float:
    """Average precision (area under the precision-recall curve); NaN without positives."""
    y, p = _arrays(y, p)
    return float(average_precision_score(y, p)) if y.sum() > 0 else float("nan")


def brier(y, p) -> float:
    """Mean squared error of the probabilities."""
    y, p = _arrays(y, p)
    return float(np.mean((p - y) ** 2)) if y.size else float("nan")


def brier_skill(y, p, base_rate: float) -> float:
    """1 - Brier(p) / Brier(constant base_rate); base_rate comes from the TRAINING rows,
    so a model that only learned the base rate scores ~0 and noise-fitting scores < 0."""
    y, p = _arrays(y, p)
    reference = brier(y, np.full_like(y, float(base_rate)))
    if not reference > 0:
        return float("nan")
    return 1.0 - brier(y, p) / reference


def log_loss(y, p, eps: float = LOG_LOSS_EPS) -> float:
    """Mean negative log-likelihood, with p clipped to [eps, 1 - eps]."""
    y, p = _arrays(y, p)
    if not y.size:
        return float("nan")
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def _bin_index(p: np.ndarray, n_bins: int) -> np.ndarray:
    # equal-width bins on [0, 1]; p == 1 belongs to the last bin
    return np.clip((p * n_bins).astype("int64"), 0, n_bins - 1)


def reliability_table(y, p, n_bins: int = 10) -> pd.DataFrame:
    """Per equal-width bin: bounds, row count, mean predicted probability, observed rate.
    Empty bins are kept with count 0 and NaN means so the table always has n_bins rows."""
    y, p = _arrays(y, p)
    idx = _bin_index(p, n_bins)
    count = np.bincount(idx, minlength=n_bins).astype("int64")
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(idx, weights=p, minlength=n_bins) / count
        rate = np.bincount(idx, weights=y, minlength=n_bins) / count
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return pd.DataFrame({"bin": np.arange(n_bins), "lower": edges[:-1], "upper": edges[1:],
                         "count": count, "mean_predicted": mean_p, "observed_rate": rate})


def expected_calibration_error(y, p, n_bins: int = 10) -> float:
    """Sum over equal-width bins of (bin share of rows) x |observed rate - mean prediction|."""
    y, p = _arrays(y, p)
    if not y.size:
        return float("nan")
    table = reliability_table(y, p, n_bins)
    filled = table[table["count"] > 0]
    gap = (filled["observed_rate"] - filled["mean_predicted"]).abs()
    return float((filled["count"] * gap).sum() / y.size)


def lift_top_decile(y, p, fraction: float = 0.1) -> float:
    """Positive rate in the top `fraction` of rows by p, divided by the overall rate.

    Rows tied at the cut-off share the remaining slots pro rata, so the result does not
    depend on row order (a constant predictor has lift exactly 1)."""
    y, p = _arrays(y, p)
    if not y.size or y.sum() == 0:
        return float("nan")
    k = max(1, int(math.ceil(fraction * y.size)))
    threshold = np.sort(p)[::-1][k - 1]
    above = p > threshold
    tied = p == threshold
    positives = y[above].sum() + (k - above.sum()) * y[tied].mean()
    return float((positives / k) / y.mean())


def _binary_metrics(y: np.ndarray, p: np.ndarray, base_rate: float) -> dict:
    return {
        "auc": finite_or_none(roc_auc(y, p)),
        "pr_auc": finite_or_none(pr_auc(y, p)),
        "brier": finite_or_none(brier(y, p)),
        "brier_skill": finite_or_none(brier_skill(y, p, base_rate)),
        "log_loss": finite_or_none(log_loss(y, p)),
        "ece": finite_or_none(expected_calibration_error(y, p)),
        "lift_top_decile": finite_or_none(lift_top_decile(y, p)),
        "n": int(y.size),
        "positives": int(y.sum()),
    }


def _group_labels(values, size: int, name: str) -> np.ndarray:
    labels = pd.Series(np.asarray(values, dtype=object).ravel())
    if len(labels) != size:
        raise ValueError(f"group '{name}' has {len(labels)} labels for {size} rows")
    return labels.where(labels.notna(), "missing").astype(str).to_numpy()


def classification_report(y, p, base_rate: float,
                          groups: Mapping[str, np.ndarray] | None = None) -> dict:
    """All close-probability metrics, plus `by_<group>` sub-dicts (e.g. per stage, per
    segment) keyed by group level. JSON-safe: None where a metric is undefined."""
    y, p = _arrays(y, p)
    report = _binary_metrics(y, p, base_rate)
    for name, values in (groups or {}).items():
        labels = _group_labels(values, y.size, name)
        report[f"by_{name}"] = {
            level: _binary_metrics(y[labels == level], p[labels == level], base_rate)
            for level in sorted(set(labels))}
    return report


# --- time to close (won deals) -------------------------------------------------------

def pinball_loss(y, q_pred, alpha: float) -> float:
    """Quantile (pinball) loss of predicted `alpha`-quantiles."""
    y, q = _arrays(y, q_pred)
    diff = y - q
    return float(np.mean(np.maximum(alpha * diff, (alpha - 1) * diff))) if y.size else float("nan")


def interval_coverage(y, lo, hi) -> float:
    """Share of y inside [lo, hi] (bounds included)."""
    y, lo = _arrays(y, lo)
    hi = np.asarray(hi, dtype="float64").ravel()
    return float(np.mean((y >= lo) & (y <= hi))) if y.size else float("nan")


def mae(y, y_pred) -> float:
    """Mean absolute error."""
    y, y_pred = _arrays(y, y_pred)
    return float(np.mean(np.abs(y - y_pred))) if y.size else float("nan")


def _dense_rank(x: np.ndarray) -> np.ndarray:
    return np.unique(x, return_inverse=True)[1].astype("int64")


def _count_earlier_smaller(r: np.ndarray) -> np.ndarray:
    """For each position i, #{j < i : r[j] < r[i]} for non-negative int ranks r.

    O(n log n) and vectorised: at bit level k, rows sharing the rank prefix above k form
    a group; a row whose bit k is 1 exceeds every earlier row of its group with bit 0."""
    n = r.size
    out = np.zeros(n, dtype="int64")
    if n == 0:
        return out
    pos = np.arange(n)
    for k in range(max(1, int(r.max()).bit_length())):
        group = r >> (k + 1)
        order = np.lexsort((pos, group))
        g = group[order]
        zero = ((r[order] >> k) & 1) == 0
        zeros_before = np.concatenate(([0], np.cumsum(zero)[:-1]))
        new_group = np.concatenate(([True], g[1:] != g[:-1]))
        start = np.maximum.accumulate(np.where(new_group, pos, 0))
        out[order] += np.where(zero, 0, zeros_before - zeros_before[start])
    return out


def concordance_index(duration, event_observed, predicted_time) -> float:
    """Harrell's C for predicted times (longer predicted time = later close).

    A pair (i, j) is comparable when duration_i < duration_j and i's event was observed
    (j may be censored: it was still open after i closed). It is concordant when
    predicted_i < predicted_j; tied predictions count one half. Pairs with equal
    durations are not comparable. O(n log n); NaN when no pair is comparable."""
    t, e = _arrays(duration, event_observed)
    _, pred = _arrays(duration, predicted_time)
    if t.size == 0:
        return float("nan")
    rt, rp = _dense_rank(t), _dense_rank(pred)
    n = t.size
    # later_i = #{j: t_j > t_i}
    later = n - np.searchsorted(np.sort(rt), rt, side="right")
    # concordant_i = #{j: t_j > t_i, p_j > p_i}: order by (t desc, p asc) so equal-t rows
    # before i have smaller p and are never counted as "earlier with larger p"
    order = np.lexsort((rp, -rt))
    concordant = np.empty(n, dtype="int64")
    concordant[order] = _count_earlier_smaller(rp.max() - rp[order])
    # tied_i = #{j: t_j > t_i, p_j == p_i}: count within the (p, t)-sorted block of equal p
    width = rt.max() + 2
    key = rp * width + rt
    sorted_key = np.sort(key)
    block_end = np.searchsorted(sorted_key, rp * width + width - 1)
    tied = block_end - np.searchsorted(sorted_key, key, side="right")
    events = e == 1
    comparable = later[events].sum()
    if comparable == 0:
        return float("nan")
    return float((concordant[events].sum() + 0.5 * tied[events].sum()) / comparable)


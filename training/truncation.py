"""Right truncation of durations: the rows a label cutoff lets through, weighted back.

A time fold's won row (as-of T, d days to the close) is known only if the close came by
the fold's label cutoff (d <= cutoff - T), so a fold over-represents short durations.
`truncation_weights` gives each such row the inverse probability of being seen;
`weighted_quantile` is the quantile the conformal shifts take with them.
"""
from __future__ import annotations

import numpy as np


def truncation_weights(days: np.ndarray, limits_days: np.ndarray) -> np.ndarray:
    """Inverse-probability weights of a fold's won rows against right truncation.

    `days`: each won row's days from its as-of date to the close; `limits_days`: for every
    row of the fold (won, lost or still open), the days from its as-of date to the fold's
    label cutoff. A duration d is seen only from as-of dates at least d before the cutoff,
    so its rows are the share G(d) = P(limit >= d) of what they would be without the cutoff;
    each row counts 1 / G(d) (1 for durations every as-of date of the fold sees). A row seen
    has d <= its own limit, so G(d) >= 1 / len(limits_days): the weights are bounded."""
    limits = np.sort(np.asarray(limits_days, dtype=float))
    if not len(limits):
        return np.ones(len(days))
    seen = 1.0 - np.searchsorted(limits, np.asarray(days, dtype=float), side="left") / len(limits)
    return 1.0 / np.maximum(seen, 1.0 / len(limits))


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The q-quantile of `values` with `weights` (the lower value at a tie of cumulative weight;
    `np.quantile`'s 'inverted_cdf' with equal weights)."""
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(np.asarray(weights, dtype=float)[order])
    return float(np.asarray(values)[order][min(np.searchsorted(cum, q * cum[-1], side="left"), len(cum) - 1)])

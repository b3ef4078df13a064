"""Time-based folds with a gap, so that no label crosses a fold boundary.

Snapshots are assigned to train / valid / calib / test by their as-of date. Each fold's
labels are taken as they were known at the start of the next fold: a row whose deal
was still open then is censored for that fold and left out, never counted as lost.
The gap between folds gives every row at least `gap_days` to resolve.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.errors import NotEnoughData

FOLDS = ("train", "valid", "calib", "test")


@dataclass(frozen=True)
class TimeFolds:
    """Boundaries of the four folds: fold k covers [starts[k], ends[k]) of as-of dates."""

    starts: tuple[pd.Timestamp, ...]
    ends: tuple[pd.Timestamp, ...]
    label_cutoffs: tuple[pd.Timestamp, ...]  # labels of fold k are as known at this time

    def to_dict(self) -> dict:
        return {name: {"from": s.isoformat(), "to": e.isoformat(), "labels_known_at": c.isoformat()}
                for name, s, e, c in zip(FOLDS, self.starts, self.ends, self.label_cutoffs)}


def make_time_folds(first_as_of: pd.Timestamp, last_as_of: pd.Timestamp, data_end: pd.Timestamp,
                    fractions: tuple[float, float, float, float] = (0.6, 0.13, 0.12, 0.15),
                    gap_days: int = 45) -> TimeFolds:
    """Cut [first_as_of, last_as_of] into four consecutive folds separated by `gap_days`."""
    gap = pd.Timedelta(days=gap_days)
    usable = (last_as_of - first_as_of) - 3 * gap
    if usable <= pd.Timedelta(days=28 * 4):
        raise NotEnoughData(
            f"history from {first_as_of.date()} to {last_as_of.date()} is too short for four time "
            f"folds with {gap_days}-day gaps: supply a longer export or lower the gap")
    starts, ends = [], []
    cursor = first_as_of
    for frac in fractions:
        end = cursor + usable * (frac / sum(fractions))
        starts.append(cursor)
        ends.append(end)
        cursor = end + gap
    cutoffs = [starts[1], starts[2], starts[3], data_end]
    return TimeFolds(tuple(starts), tuple(ends), tuple(cutoffs))


def assign_folds(as_of: pd.Series, folds: TimeFolds) -> pd.Series:
    """Fold name per row ('' for rows that fall in a gap)."""
    out = np.full(len(as_of), "", dtype=object)
    values = as_of.to_numpy()
    for name, s, e in zip(FOLDS, folds.starts, folds.ends):
        out[(values >= np.datetime64(s)) & (values < np.datetime64(e))] = name
    return pd.Series(out, index=as_of.index, dtype="string")


def won_as_known_at(labels: pd.DataFrame, closed_at: pd.Series, cutoff: pd.Timestamp) -> pd.Series:
    """`won` label as it was known at `cutoff`: NaN for deals not closed by then."""
    known = closed_at.notna() & (closed_at <= cutoff)
    return labels["won"].where(known.to_numpy())


def stratified_folds(y: np.ndarray, seed: int = 0,
                     fractions: tuple[float, float, float, float] = (0.6, 0.15, 0.1, 0.15)) -> pd.Series:
    """Static mode (no dates): a stratified random split into the same four folds."""
    rng = np.random.default_rng(seed)
    out = np.empty(len(y), dtype=object)
    bounds = np.cumsum(fractions) / sum(fractions)
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        rng.shuffle(idx)
        cuts = (bounds * len(idx)).round().astype(int)
        for name, lo, hi in zip(FOLDS, np.r_[0, cuts[:-1]], cuts):
            out[idx[lo:hi]] = name
    return pd.Series(out, dtype="string")

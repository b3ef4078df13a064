"""Time-based folds with a gap, so that no label crosses a fold boundary.

Snapshots are assigned to train / valid / calib / test by their as-of date. Each fold's
labels are taken as they were known at the start of the next fold: a row whose deal
was still open then is censored for that fold and left out, never counted as lost.
The gap between folds gives every row at least `gap_days` to resolve. An export too short
for four folds with the asked gap gets three folds, then shorter gaps (`fold_plans`), each
stated in the plan's notes; shorter still, `training.train` falls back to the cold start.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.errors import NotEnoughData

FOLDS = ("train", "valid", "calib", "test")
THREE_FOLDS = ("train", "valid", "test")  # short exports: the validation fold also calibrates
FRACTIONS = {FOLDS: (0.6, 0.13, 0.12, 0.15), THREE_FOLDS: (0.6, 0.25, 0.15)}
MIN_FOLD_DAYS = 28  # the usable span (gaps taken out) must exceed this many days per fold
MIN_GAP_DAYS = 7  # a short export's gap is shortened down to this, never below
NUMBER_WORDS = {3: "three", 4: "four"}


@dataclass(frozen=True)
class TimeFolds:
    """Boundaries of the folds (`names`, in time order): fold k covers [starts[k], ends[k])
    of as-of dates. `notes` say how the plan departs from four folds with the asked gap."""

    starts: tuple[pd.Timestamp, ...]
    ends: tuple[pd.Timestamp, ...]
    label_cutoffs: tuple[pd.Timestamp, ...]  # labels of fold k are as known at this time
    names: tuple[str, ...] = FOLDS
    gap_days: int = 45
    notes: tuple[str, ...] = ()

    @property
    def test_start(self) -> pd.Timestamp:
        return self.starts[-1]

    @property
    def calib_fold(self) -> str:
        """The fold the calibrator is fitted on ("valid" when there is no calib fold)."""
        return "calib" if "calib" in self.names else "valid"

    def to_dict(self) -> dict:
        return {name: {"from": s.isoformat(), "to": e.isoformat(), "labels_known_at": c.isoformat()}
                for name, s, e, c in zip(self.names, self.starts, self.ends, self.label_cutoffs)}

    def plan(self) -> dict:
        """How many folds, which gap, and why (for the metrics JSON and the console)."""
        return {"n_folds": len(self.names), "gap_days": self.gap_days, "notes": list(self.notes)}


def make_time_folds(first_as_of: pd.Timestamp, last_as_of: pd.Timestamp, data_end: pd.Timestamp,
                    fractions: tuple[float, ...] | None = None, gap_days: int = 45,
                    names: tuple[str, ...] = FOLDS) -> TimeFolds:
    """Cut [first_as_of, last_as_of] into consecutive folds `names` separated by `gap_days`."""
    fractions = fractions or FRACTIONS[names]
    if len(fractions) != len(names):
        raise ValueError(f"{len(fractions)} fractions for {len(names)} folds {names}")
    gap = pd.Timedelta(days=gap_days)
    usable = (last_as_of - first_as_of) - (len(names) - 1) * gap
    if usable <= pd.Timedelta(days=MIN_FOLD_DAYS * len(names)):
        raise NotEnoughData(
            f"history from {first_as_of.date()} to {last_as_of.date()} is too short for "
            f"{NUMBER_WORDS.get(len(names), len(names))} time folds with {gap_days}-day gaps: "
            f"supply a longer export or lower the gap")
    starts, ends = [], []
    cursor = first_as_of
    for frac in fractions:
        end = cursor + usable * (frac / sum(fractions))
        starts.append(cursor)
        ends.append(end)
        cursor = end + gap
    cutoffs = [*starts[1:], data_end]
    return TimeFolds(tuple(starts), tuple(ends), tuple(cutoffs), tuple(names), int(gap_days))


def fold_plans(gap_days: int) -> list[tuple[tuple[str, ...], int, str]]:
    """(fold names, gap in days, note) to try in order, from the asked plan (four folds,
    `gap_days`) to three folds, then three folds with ever shorter gaps."""
    three = (f"the export is too short for four time folds with {gap_days}-day gaps: three folds "
             f"(train, valid, test), the calibrator fitted on the validation fold")
    plans = [(FOLDS, gap_days, ""), (THREE_FOLDS, gap_days, three)]
    shorter = [(THREE_FOLDS, g, (f"{three}, and the gap between folds shortened from {gap_days} to {g} days "
                                 f"(rows of a fold have less time to resolve, so more are censored)"))
               for g in range(gap_days - 1, MIN_GAP_DAYS - 1, -1)]
    return plans + shorter


def assign_folds(as_of: pd.Series, folds: TimeFolds) -> pd.Series:
    """Fold name per row ('' for rows that fall in a gap)."""
    out = np.full(len(as_of), "", dtype=object)
    values = as_of.to_numpy()
    for name, s, e in zip(folds.names, folds.starts, folds.ends):
        out[(values >= np.datetime64(s)) & (values < np.datetime64(e))] = name
    return pd.Series(out, index=as_of.index, dtype="string")


def fold_rows(feats: pd.DataFrame, fold_labels: pd.Series, fold: str) -> np.ndarray:
    """Rows of `fold` whose label is known at the fold's cutoff (the rows it learns from)."""
    return ((feats["fold"] == fold) & fold_labels.notna()).to_numpy()


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

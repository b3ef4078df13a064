"""The leakage guard: deal columns that alone separate won from lost (almost) perfectly.

A column filled in during or after the sale (an amount that is 0 for every lost deal, a
"lead quality" typed in once the outcome is known) gives a model that looks perfect in
evaluation and is useless on open deals. Among closed deals, each candidate column is
scored on its own by ROC AUC, the better of both directions (1.0 and 0.0 both separate):

- numeric: its values (deals where it is filled in, when both outcomes have at least
  `MIN_PER_CLASS` of them);
- categorical: the per-level win rate computed out-of-fold (each deal scored by the rate
  of its level among the other folds' deals, so an id-like column scores about 0.5);
- any column: its missingness (filled in for won deals only, say).

A column at or above `LEAK_AUC` on any of these is suspected. `training.train` leaves the
features derived from it out of the model (unless the user keeps it by name) and reports
it; `features.sources.ingest` reports it in its notes. The generator's columns never
reach the threshold.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.build import FeatureBuilder
from features.definitions import AMOUNT_FEATURES, RAW_CATEGORICAL
from features.schema import CanonicalData

LEAK_AUC = 0.97  # a single column this good on its own is taken for a leak, not a signal
MIN_PER_CLASS = 20  # fewer won (or lost) deals with a value: too few to judge the values
OOF_FOLDS = 5
LEVEL_SMOOTHING = 1.0  # pseudo-deals at the overall rate per level (out-of-fold rates)


@dataclass(frozen=True)
class SuspectedLeak:
    """A column that alone separates won from lost among closed deals."""

    column: str
    auc: float  # the best single-column AUC, in [0.5, 1]
    test: str  # "values", "out-of-fold level win rate" or "missingness"

    def to_dict(self) -> dict:
        return {"auc": self.auc, "test": self.test}

    def describe(self) -> str:
        return f"'{self.column}' (AUC {self.auc:.4f}, by its {self.test})"


def candidate_columns(data: CanonicalData) -> dict[str, str]:
    """Deal columns a model may read, name -> "numeric" or "categorical": the amount, the
    raw categoricals (owner, source, ...) and the declared attributes."""
    deals = data.deals
    out = {"amount": "numeric"} if "amount" in deals and not data.meta.static else {}
    out.update({c: "categorical" for c in RAW_CATEGORICAL if c in deals})
    out.update({a: ("numeric" if kind == "numeric" else "categorical")
                for a, kind in data.meta.attributes.items() if a in deals})
    return out


def suspected_leaks(data: CanonicalData, threshold: float = LEAK_AUC, seed: int = 0) -> list[SuspectedLeak]:
    """Candidate columns whose single-column AUC among closed deals is >= `threshold`,
    best first."""
    closed = data.deals[data.deals["outcome"].isin(["won", "lost"])]
    y = (closed["outcome"] == "won").to_numpy()
    if min(y.sum(), (~y).sum()) < MIN_PER_CLASS:
        return []
    found = [column_auc(closed[col], y, kind, seed) for col, kind in candidate_columns(data).items()]
    leaks = [SuspectedLeak(col, auc, test) for col, (auc, test) in zip(candidate_columns(data), found)
             if auc >= threshold]
    return sorted(leaks, key=lambda leak: -leak.auc)


def column_auc(values: pd.Series, won: np.ndarray, kind: str, seed: int = 0) -> tuple[float, str]:
    """(best AUC, which test gave it) of one column on its own."""
    missing = values.isna().to_numpy()
    scores = {"missingness": separation_auc(missing.astype(float), won)}
    if kind == "numeric":
        present = ~missing
        if min(won[present].sum(), (~won[present]).sum()) >= MIN_PER_CLASS:
            numbers = pd.to_numeric(values[present], errors="coerce").to_numpy(dtype="float64")
            scores["values"] = separation_auc(numbers, won[present])
    else:
        scores["out-of-fold level win rate"] = separation_auc(out_of_fold_level_rate(values, won, seed), won)
    test = max(scores, key=lambda k: scores[k])
    return scores[test], test


def separation_auc(score: np.ndarray, won: np.ndarray) -> float:
    """ROC AUC of `score` for `won`, the better direction (0.5 when either class is
    empty, NaN scores ranked lowest)."""
    n_won, n_lost = int(won.sum()), int((~won).sum())
    if n_won == 0 or n_lost == 0:
        return 0.5
    ranks = pd.Series(np.where(np.isnan(score), -np.inf, score)).rank(method="average").to_numpy()
    auc = (ranks[won].sum() - n_won * (n_won + 1) / 2) / (n_won * n_lost)
    return float(max(auc, 1.0 - auc))


def out_of_fold_level_rate(values: pd.Series, won: np.ndarray, seed: int = 0) -> np.ndarray:
    """Per deal, the win rate of its level among the deals of the other folds (missing is
    a level), shrunk toward those deals' overall rate by `LEVEL_SMOOTHING` pseudo-deals."""
    codes = pd.factorize(values.astype(object).where(values.notna(), "__missing__"))[0]
    fold = np.random.default_rng(seed).permutation(len(codes)) % OOF_FOLDS
    n_levels = codes.max() + 1
    cell = fold * n_levels + codes  # (fold, level) cells
    wins = np.bincount(cell, weights=won, minlength=OOF_FOLDS * n_levels).reshape(OOF_FOLDS, n_levels)
    counts = np.bincount(cell, minlength=OOF_FOLDS * n_levels).reshape(OOF_FOLDS, n_levels)
    other_wins = (wins.sum(axis=0) - wins)[fold, codes]
    other_counts = (counts.sum(axis=0) - counts)[fold, codes]
    fold_wins, fold_counts = wins.sum(axis=1), counts.sum(axis=1)
    prior = ((fold_wins.sum() - fold_wins) / np.maximum(fold_counts.sum() - fold_counts, 1))[fold]
    return (other_wins + LEVEL_SMOOTHING * prior) / (other_counts + LEVEL_SMOOTHING)


def derived_features(builder: FeatureBuilder, column: str) -> list[str]:
    """The features of a fitted builder computed from one deal column."""
    if column == "amount":
        names = list(AMOUNT_FEATURES)
    elif column in RAW_CATEGORICAL:
        names = [column, f"{column}_win_rate", f"{column}_closed_deals"]
        names += ["owner_avg_won_amount", "owner_open_deals"] if column == "owner" else []
    else:
        names = [builder.attribute_features_.get(column, column)]
    return [n for n in builder.feature_names_ if n in set(names)]


def leak_report(data: CanonicalData, threshold: float = LEAK_AUC) -> list[str]:
    """One note per suspected leak, for the ingestion report."""
    return [f"suspected leak: {leak.describe()} alone separates won from lost among closed deals; "
            f"`leadscore train` leaves it out unless given --keep-column {leak.column}"
            for leak in suspected_leaks(data, threshold)]


@dataclass(frozen=True)
class LeakDecision:
    """What the guard did at `train`: suspected leaks left out, and those kept by name."""

    threshold: float
    excluded: tuple[SuspectedLeak, ...]
    kept: tuple[SuspectedLeak, ...]
    unknown_keeps: tuple[str, ...] = ()  # --keep-column names that are not suspected leaks

    @property
    def excluded_columns(self) -> list[str]:
        return [leak.column for leak in self.excluded]

    def to_dict(self) -> dict:
        return {"threshold_auc": self.threshold, "n_excluded": len(self.excluded),
                "excluded": {leak.column: leak.to_dict() for leak in self.excluded},
                "kept": {leak.column: leak.to_dict() for leak in self.kept}}

    def messages(self) -> list[str]:
        out = [f"leakage guard: {leak.describe()} alone separates won from lost among closed deals; "
               f"left out of the model (keep it with --keep-column {leak.column})" for leak in self.excluded]
        out += [f"leakage guard: {leak.describe()} alone separates won from lost among closed deals; "
                f"kept in the model as asked (--keep-column {leak.column})" for leak in self.kept]
        return out + [f"--keep-column {name}: not a suspected leak (nothing to keep)" for name in self.unknown_keeps]


def guard_leaks(data: CanonicalData, keep: tuple[str, ...] = (), threshold: float = LEAK_AUC,
                seed: int = 0) -> LeakDecision:
    """Suspected leaks of `data`, split into those left out and those the user keeps."""
    leaks = suspected_leaks(data, threshold, seed)
    found = {leak.column for leak in leaks}
    return LeakDecision(threshold, tuple(leak for leak in leaks if leak.column not in keep),
                        tuple(leak for leak in leaks if leak.column in keep),
                        tuple(name for name in keep if name not in found))


def without_columns(builder: FeatureBuilder, columns: list[str]) -> FeatureBuilder:
    """A copy of a fitted builder whose features leave out everything derived from
    `columns` (the copy shares the fitted tables; the builder itself is not changed)."""
    if not columns:
        return builder
    dropped = {name for column in columns for name in derived_features(builder, column)}
    out = copy.copy(builder)
    out.feature_names_ = [n for n in builder.feature_names_ if n not in dropped]
    return out

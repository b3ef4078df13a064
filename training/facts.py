"""What one fact about a deal is, for its reasons (`training/explain.py`): features that
are the same for every deal scored at one time are none (`SHARED`), and features that say
the same thing are one (`MERGED`, their contributions summed into the first one present).
"""
from __future__ import annotations

import numpy as np

from features.definitions import CALENDAR_FEATURES

SHARED = frozenset({"global_win_rate", *CALENDAR_FEATURES})
MERGED = {"stage_index": "stage", "furthest_stage_index": "stage", "stage_mean_dwell_days": "stage",
          "stage_velocity": "days_in_stage", "log_amount": "amount"}  # feature -> the factor it is part of

Facts = tuple[list[int], list[tuple[int, list[int]]]]  # shared positions, (first, others) of each merged group


def fact_groups(names: list[str]) -> Facts:
    """Positions in `names` of the `SHARED` features and of each `MERGED` group present
    (its first feature, the others)."""
    index = {name: j for j, name in enumerate(names)}
    groups = []
    for head in dict.fromkeys(MERGED.values()):
        group = [index[n] for n in [head, *(m for m, h in MERGED.items() if h == head)] if n in index]
        if len(group) > 1:
            groups.append((group[0], group[1:]))
    return [j for name, j in index.items() if name in SHARED], groups


def by_fact(contributions: np.ndarray, facts: Facts) -> np.ndarray:
    """Contributions per fact: a copy with `SHARED` features at 0 and each `MERGED` group
    summed into its first feature present (the others 0); NaN counts as 0."""
    shared, groups = facts
    out = np.where(np.isnan(contributions), 0.0, contributions)
    out[:, shared] = 0.0
    for head, others in groups:
        out[:, head] += out[:, others].sum(axis=1)
        out[:, others] = 0.0
    return out

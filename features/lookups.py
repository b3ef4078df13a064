"""The search structures a fitted `FeatureBuilder` reads per request, built once.

Feature values come from the builder's learned state (category levels, history tables);
looking them up fast needs that state in another shape: a dict per list of levels, and
each history table as arrays with its half of the as-of search (`features.history.TableIndex`).
`FeatureLookups.of(...)` makes them; the serving object
(`training.compiled.CompiledPredictor`) keeps one for the life of the process, and batch
callers that pass none get one built per `FeatureBuilder.columns` call. The domain
objects themselves hold no caches and pickle as they are.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.arrays import encode, level_codes
from features.history import History, StackedIndex, TableIndex


@dataclass(frozen=True)
class Levels:
    """A list of levels with its level -> code dict."""

    index: pd.Index
    codes: dict | None  # None: pandas' indexer for every input (batch callers)

    @classmethod
    def of(cls, index: pd.Index, with_codes: bool = True) -> "Levels":
        return cls(index=index, codes=level_codes(index) if with_codes else None)

    def encode(self, values: np.ndarray | None, n: int) -> np.ndarray:
        """Codes of `values` (object array of str/None); -1 for missing or unseen."""
        return encode(self.index, values, n, self.codes)


@dataclass(frozen=True)
class FeatureLookups:
    categories: dict[str, Levels]  # categorical feature -> its levels (`FeatureBuilder.categories_`)
    groups: dict[str, Levels]  # grouping column -> the levels of its history table
    dwell: TableIndex | None
    open_load: TableIndex | None
    outcomes: StackedIndex | None  # the outcome table, then each grouping column's

    @classmethod
    def of(cls, categories: dict[str, pd.Index], history: History | None, group_columns: list[str],
           with_codes: bool = True) -> "FeatureLookups":
        """From a fitted builder's `categories_`, `history_` (None: static) and `group_columns_`.
        `with_codes`: level dicts for request-sized inputs (not worth building for one batch)."""
        cats = {name: Levels.of(index, with_codes) for name, index in categories.items()}
        if history is None:
            return cls(categories=cats, groups={}, dwell=None, open_load=None, outcomes=None)
        return cls(categories=cats,
                   groups={col: Levels.of(history.groups[col].levels, with_codes) for col in group_columns},
                   dwell=history.dwell.search_index(),
                   open_load=None if history.open_load is None else history.open_load.search_index(),
                   outcomes=StackedIndex.of(history, group_columns))

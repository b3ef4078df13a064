"""A predictor compiled for serving: the trained `LeadScorePredictor` plus the lookup tables
a request needs, built once when the service (or the MLflow pyfunc model) loads it.

The predictor holds learned state only and pickles as it is. What a request looks up
(booster codes of the categories, category texts for explanations, the close model's path
attribution table, the feature builder's category dicts and history search indexes) is
derived from that state here, once, instead of in caches hidden in the domain classes;
`warm` then scores one made-up deal so the first real request finds everything imported
and built.

    request deals -> features.payload.payload_arrays -> CompiledPredictor.score_arrays
        -> FeatureBuilder.columns (features) -> float matrix -> LeadScorePredictor.outputs
        -> close_model.predict_proba / time_model.predict_log_quantiles (training.model_protocols)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from features.arrays import DealArrays
from features.build import FeatureBuilder
from features.lookups import FeatureLookups
from features.schema import TIMESTAMP_DTYPE, DatasetMeta
from training.attribution import PathAttribution
from training.predictor import LeadScorePredictor, contribution_method, default_as_of

Explain = bool | str  # False, True (path attribution) or the contribution method, "path" or "shap"
Scores = dict[str, np.ndarray | list]  # output column -> one value per deal


class DealScorer(Protocol):
    """What the service's batcher calls (`serving.batching.ScoreBatcher`)."""

    def score_arrays(self, arrays: DealArrays, at: np.ndarray, explain: Explain = False) -> Scores: ...


@dataclass(frozen=True)
class CompiledPredictor:
    """`predictor` with its request-time lookup tables. Build with `compile`."""

    predictor: LeadScorePredictor
    remap: dict[str, np.ndarray] | None  # per categorical feature: builder code -> booster code; None: no LightGBM
    level_text: dict[str, np.ndarray]  # per categorical feature: builder code -> level text (last entry None)
    attribution: PathAttribution | None  # the close model's path attribution table, if it explains
    lookups: FeatureLookups  # the feature builder's category dicts and history search indexes

    @classmethod
    def compile(cls, predictor: LeadScorePredictor) -> "CompiledPredictor":
        builder = predictor.builder
        level_text = {n: np.array([*builder.categories_[n].tolist(), None], dtype=object)
                      for n in builder.categorical_features_}  # -1 (missing/unseen) indexes the trailing None
        explains = predictor.explains(1) and hasattr(predictor.close_model, "path_attribution")
        return cls(predictor=predictor, remap=category_remap(predictor), level_text=level_text,
                   attribution=predictor.close_model.path_attribution() if explains else None,
                   lookups=builder.lookups())

    @property
    def meta(self) -> DatasetMeta:
        return self.predictor.meta

    @property
    def static(self) -> bool:
        return self.predictor.static

    @property
    def builder(self) -> FeatureBuilder:
        return self.predictor.builder

    def score_arrays(self, arrays: DealArrays, at, explain: Explain = False) -> Scores:
        """Scores of request deals (`features.payload.payload_arrays`), all open at `at` (one
        time per deal, one time, or None for a static model): the columns of
        `LeadScorePredictor.score`, without a frame on the way. The features are
        `FeatureBuilder.columns`, the same code training runs."""
        n = len(arrays)
        at = rows_at(at, n)
        cols = self.builder.columns(arrays, np.arange(n), at, self.lookups)
        predictor = self.predictor
        if self.remap is None:  # a baseline model (cold start) reads a frame
            feats = pd.DataFrame({"deal_id": arrays.deal_id, "as_of": at, **self._frame_columns(cols)})
            return {c: v.to_numpy() if c != "top_factors" else v.tolist()
                    for c, v in predictor.score_features(feats, explain=explain).items()}
        return predictor.outputs(arrays.deal_id, at, self._matrix(cols), self._readable(cols) if explain else None,
                                 contribution_method(explain), self.attribution)

    def warm(self) -> None:
        """Score one made-up deal, so the first real request does not pay for first calls."""
        from features.payload import payload_arrays

        now = default_as_of(None)
        deal = {"deal_id": "warm-up", "created_at": (now - pd.Timedelta(days=1)).to_pydatetime(),
                **({"stage": self.meta.stages[0]} if self.meta.stages else {})}
        self.score_arrays(payload_arrays([deal], self.meta).arrays, None if self.static else now, explain=True)

    def _matrix(self, cols: dict[str, np.ndarray]) -> np.ndarray:
        """The float matrix `lgb_matrix` would make of these columns (categorical codes
        mapped onto the boosters' category lists)."""
        names = self.predictor.feature_names
        n = len(next(iter(cols.values()))) if cols else 0
        M = np.empty((n, len(names)), dtype="float64")
        for j, name in enumerate(names):
            values = cols[name]
            if name in self.remap:
                codes = self.remap[name][values]  # -1 (missing/unseen) indexes the last entry, -1
                M[:, j] = np.where(codes >= 0, codes, np.nan)
            else:
                M[:, j] = values
        return M

    def _frame_columns(self, cols: dict[str, np.ndarray]) -> dict:
        builder = self.builder
        categorical = set(builder.categorical_features_)
        return {n: pd.Categorical.from_codes(v, categories=builder.categories_[n]) if n in categorical else v
                for n, v in cols.items()}

    def _readable(self, cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Feature columns for explanations: categorical codes as their level text (None if unknown)."""
        text = self.level_text
        return {name: text[name][values] if name in text else values for name, values in cols.items()}


def rows_at(as_of, n: int) -> np.ndarray:
    """One as-of time per deal: `as_of` as given per deal, or one time (None: NaT) for all."""
    if isinstance(as_of, np.ndarray):
        return as_of.astype(TIMESTAMP_DTYPE)
    return np.full(n, np.datetime64("NaT") if as_of is None else np.datetime64(pd.Timestamp(as_of)),
                   dtype=TIMESTAMP_DTYPE)


def category_remap(predictor: LeadScorePredictor) -> dict[str, np.ndarray] | None:
    """Per categorical feature: builder code -> booster code (last entry: -1 for -1); None
    unless both models are LightGBM boosters on the builder's features and categories."""
    close, time = predictor.close_model, predictor.time_model
    boosters = [getattr(close, "booster_", None)]
    if time is not None:
        boosters += list(getattr(time, "boosters_", [None]))
    if any(b is None for b in boosters) or list(getattr(close, "feature_names_in_", [])) != predictor.feature_names \
            or any(b.pandas_categorical != boosters[0].pandas_categorical for b in boosters):
        return None
    builder = predictor.builder
    categorical = [n for n in predictor.feature_names if n in set(builder.categorical_features_)]
    trained = boosters[0].pandas_categorical or []
    if len(trained) != len(categorical):
        return None
    return {name: np.r_[pd.Index(levels).get_indexer(builder.categories_[name].astype(object)), -1].astype("int64")
            for name, levels in zip(categorical, trained)}

"""What the predictor asks of its two models: the seams a score crosses on its way from a
request to a number.

    close probability:  CloseModel.predict_proba(M) -> P(won)                  (n,)
    time to close:      TimeModel.predict_log_quantiles(M) -> log1p(days) P10/P50/P90   (n, 3)

`M` is the feature frame, or (LightGBM models, `training.lightgbm_fast`) the float matrix
made of it once. Implementations: `training.models.CloseProbabilityModel` (LightGBM,
calibrated; also an `ExplainableCloseModel`) and `training.baselines.StageRateBaseline`
(cold start); `training.models.TimeToCloseModel` and `StageTimeBaseline`.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import lightgbm as lgb
import numpy as np
import pandas as pd

from training.attribution import PathAttribution

Features = pd.DataFrame | np.ndarray


@runtime_checkable
class CloseModel(Protocol):
    def predict_proba(self, X: Features) -> np.ndarray:
        """Calibrated P(won | open at T), one value per row."""
        ...


@runtime_checkable
class ExplainableCloseModel(CloseModel, Protocol):
    """A LightGBM close model whose score splits into per-feature contributions."""

    booster_: lgb.Booster
    feature_names_in_: list[str]
    fallback_: bool  # True: it predicts a constant, so there is nothing to explain

    def contributions(self, X: Features, method: str = "path",
                      attribution: PathAttribution | None = None) -> np.ndarray: ...

    def predict_proba_and_contributions(self, X: Features, method: str = "path",
                                        attribution: PathAttribution | None = None
                                        ) -> tuple[np.ndarray, np.ndarray]: ...

    def path_attribution(self) -> PathAttribution: ...


@runtime_checkable
class TimeModel(Protocol):
    def predict_log_quantiles(self, X: Features) -> np.ndarray:
        """(n, 3) log1p(days to a won close) at P10/P50/P90, sorted."""
        ...

"""The predictor: feature code + stored history + both models + calibrator, as one object.

This is what is logged to MLflow as one model, what `leadscore score` runs, and what the
BentoML service calls. It scores open deals at an as-of date from canonical tables, so
training and serving share one feature implementation.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.build import FeatureBuilder
from features.schema import TIMESTAMP_DTYPE, CanonicalData, DatasetMeta
from training.explain import FactorExplainer
from training.models import cdf_won_by, shared_matrix

HORIZONS = (30, 60, 90)


@dataclass
class Tiers:
    """Score tiers: hot at or above `hot`, warm at or above `warm`, else cold."""

    hot: float = 0.5
    warm: float = 0.2

    def assign(self, p: np.ndarray) -> np.ndarray:
        return np.where(p >= self.hot, "hot", np.where(p >= self.warm, "warm", "cold"))


@dataclass
class LeadScorePredictor:
    """Scores open deals. `kind` is "lightgbm" or "stage_baseline" (cold start)."""

    builder: FeatureBuilder
    meta: DatasetMeta  # stage order and attribute kinds the payloads are validated against
    close_model: object  # predict_proba(X) -> P(won); LightGBM model or StageRateBaseline
    time_model: object | None  # predict_log_quantiles(X) -> (n, 3); None in static mode
    explainer: FactorExplainer | None = None
    kind: str = "lightgbm"
    tiers: Tiers = field(default_factory=Tiers)
    info: dict = field(default_factory=dict)  # trained_at, data fingerprint, folds, version

    @property
    def static(self) -> bool:
        return bool(self.builder.static_)

    @property
    def feature_names(self) -> list[str]:
        return list(self.builder.feature_names_)

    def features(self, data: CanonicalData, as_of=None) -> pd.DataFrame:
        """Point-in-time feature rows (deal_id, as_of, features) of deals open at `as_of`."""
        if self.static:
            return self.builder.transform_static(data)
        return self.builder.transform(data, default_as_of(as_of))

    def score(self, data: CanonicalData, as_of=None, explain: bool = False) -> pd.DataFrame:
        """One row per deal open at `as_of` (default: now) with probabilities, score, tier,
        P(won within 30/60/90 days), expected close date P10/P50/P90, optional top factors."""
        return self.score_features(self.features(data, as_of), explain=explain)

    def score_features(self, feats: pd.DataFrame, explain: bool = False) -> pd.DataFrame:
        X = feats[self.feature_names]
        M = shared_matrix(X, self.close_model, self.time_model) if len(X) else X  # converted once for all boosters
        p = np.asarray(self.close_model.predict_proba(M), dtype=float)
        # columns collected in a dict and framed once: per-column inserts cost more than a one-deal score
        out = {"deal_id": feats["deal_id"].to_numpy(), "as_of": feats["as_of"].to_numpy(),
               "close_probability": p, "score": np.clip(np.rint(p * 100), 1, 99).astype(int),
               "tier": self.tiers.assign(p)}
        if self.time_model is not None and len(X):
            logq = self.time_model.predict_log_quantiles(M)
            for h in HORIZONS:
                out[f"p_close_within_{h}d"] = p * cdf_won_by(logq, h)
            days = np.expm1(logq)
            as_of = pd.to_datetime(out["as_of"]).to_numpy(dtype=TIMESTAMP_DTYPE)
            for k, name in enumerate(("p10", "p50", "p90")):
                out[f"close_days_{name}"] = days[:, k]
                out[f"log_close_days_{name}"] = logq[:, k]
                out[f"expected_close_date_{name}"] = _add_days_normalized(as_of, days[:, k])
        if explain:
            out["top_factors"] = self.explain(X, M)
        return pd.DataFrame(out)

    def explain(self, X: pd.DataFrame, matrix: np.ndarray | None = None) -> list[dict]:
        """Top positive/negative factors per row (LightGBM contributions), or the stage
        rate as the single factor for the cold-start baseline. `matrix`: X already
        converted for the close model (`shared_matrix`), to skip a second conversion."""
        if self.explainer is None or not hasattr(self.close_model, "contributions") or len(X) == 0:
            return [{"positive": [], "negative": []} for _ in range(len(X))]
        if getattr(self.close_model, "fallback_", False):
            return [{"positive": [], "negative": []} for _ in range(len(X))]
        return self.explainer.explain(X, self.close_model.contributions(X if matrix is None else matrix))

    def p_won_between(self, scored: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> np.ndarray:
        """P(won with close date in [start, end)) per scored row, consistent with P(won)."""
        as_of = pd.to_datetime(scored["as_of"])
        logq = scored[["log_close_days_p10", "log_close_days_p50", "log_close_days_p90"]].to_numpy()
        d0 = ((start - as_of).dt.total_seconds() / 86400).clip(lower=0).to_numpy()
        d1 = ((end - as_of).dt.total_seconds() / 86400).clip(lower=0).to_numpy()
        return scored["close_probability"].to_numpy() * (cdf_won_by(logq, d1) - cdf_won_by(logq, d0))


def _add_days_normalized(at: np.ndarray, days: np.ndarray) -> np.ndarray:
    """(at + round(days) days) at midnight, NaT where days is not finite."""
    whole = np.where(np.isfinite(days), np.round(days), 0).astype("int64").astype("timedelta64[D]")
    shifted = (at + whole).astype("datetime64[D]").astype(TIMESTAMP_DTYPE)
    return np.where(np.isfinite(days), shifted, np.datetime64("NaT")).astype(TIMESTAMP_DTYPE)


def default_as_of(as_of) -> pd.Timestamp:
    """The request's as-of date, or now (UTC, tz-naive like the canonical tables)."""
    if as_of is None:
        return pd.Timestamp.now(tz="UTC").tz_localize(None).floor("s")
    ts = pd.Timestamp(as_of)
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts

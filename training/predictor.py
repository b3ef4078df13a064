"""The predictor: feature code + stored history + both models + calibrator, as one object.

This is what is logged to MLflow as one model and what `leadscore score` runs. It scores
open deals at an as-of date from canonical tables, so training and serving share one
feature implementation. It holds learned state only and pickles as it is; the service
scores through `training.compiled.CompiledPredictor`, which adds the lookup tables a
request needs precomputed.

A score, from features to number: `_outputs` calls `close_model.predict_proba` (the
`CloseModel` seam of `training.model_protocols`) for P(won), then
`time_model.predict_log_quantiles` (`TimeModel`) for the close-date range.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.build import FeatureBuilder
from features.dates import utc_now
from features.schema import TIMESTAMP_DTYPE, CanonicalData, DatasetMeta
from features.staleness import StaleRule
from training.attribution import PathAttribution
from training.explain import FactorExplainer
from training.lightgbm_fast import shared_matrix
from training.model_protocols import CloseModel, TimeModel
from training.models import cdf_won_by

HORIZONS = (30, 60, 90)


@dataclass
class Tiers:
    """Score tiers: hot at or above `hot`, warm at or above `warm`, else cold; "baseline"
    for every deal when the close model is a constant or a baseline (cold start, or the
    no-signal fallback), whose probability ranks nothing."""

    hot: float = 0.5
    warm: float = 0.2
    constant: bool = False

    def assign(self, p: np.ndarray) -> np.ndarray:
        if self.constant:
            return np.full(len(p), "baseline")
        return np.where(p >= self.hot, "hot", np.where(p >= self.warm, "warm", "cold"))


@dataclass
class LeadScorePredictor:
    """Scores open deals. `kind` is "lightgbm" or "stage_baseline" (cold start)."""

    builder: FeatureBuilder
    meta: DatasetMeta  # stage order and attribute kinds the payloads are validated against
    close_model: CloseModel  # CloseProbabilityModel (LightGBM) or StageRateBaseline (cold start)
    time_model: TimeModel | None  # TimeToCloseModel or StageTimeBaseline; None in static mode
    explainer: FactorExplainer | None = None
    kind: str = "lightgbm"
    tiers: Tiers = field(default_factory=Tiers)
    info: dict = field(default_factory=dict)  # trained_at, data fingerprint, folds, version
    staleness: StaleRule | None = None  # features.staleness, as known at the end of the training data

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

    def score(self, data: CanonicalData, as_of=None, explain: bool | str = False) -> pd.DataFrame:
        """One row per deal open at `as_of` (default: now) with probabilities, score, tier,
        P(won within 30/60/90 days), expected close date P10/P50/P90, optional top factors."""
        return self.score_features(self.features(data, as_of), explain=explain)

    def score_features(self, feats: pd.DataFrame, explain: bool | str = False) -> pd.DataFrame:
        """Scores of feature rows (`features` output): one row each, same order. `explain`:
        False, True (path attribution) or the contribution method, "path" or "shap"."""
        X = feats[self.feature_names]
        M = shared_matrix(X, self.close_model, self.time_model) if len(X) else X  # converted once for all boosters
        out = pd.DataFrame(self.outputs(feats["deal_id"].to_numpy(), feats["as_of"].to_numpy(), M,
                                        X if explain else None, contribution_method(explain)))
        # words or None, as the request path gives them (pandas would infer a string dtype with NaN)
        out["stale_reason"] = pd.Series(out["stale_reason"].to_numpy(dtype=object), index=out.index, dtype=object) \
            .where(out["stale_reason"].notna(), None)
        return out

    def outputs(self, deal_id: np.ndarray, as_of: np.ndarray, M, X, method: str = "path",
                 attribution: PathAttribution | None = None) -> dict[str, np.ndarray | list]:
        """Output columns from the model matrix M (`shared_matrix` of the features, or the
        features themselves); explanations when X (features) is given (`attribution`: the
        close model's path attribution table, when the caller keeps one)."""
        contributions = None  # the score and its factors in one pass where the model can
        if X is not None and self.explains(len(deal_id)):
            p, contributions = self.close_model.predict_proba_and_contributions(M, method, attribution)
        else:
            p = np.asarray(self.close_model.predict_proba(M), dtype=float)
        stale, reason, p = self.stale_flags(M, p)
        # columns collected in a dict and framed once: per-column inserts cost more than a one-deal score
        out = {"deal_id": deal_id, "as_of": as_of, "close_probability": p,
               "score": np.clip(np.rint(p * 100), 1, 99).astype(int), "tier": self.tiers.assign(p),
               "stale": stale, "stale_reason": reason}
        if self.time_model is not None and len(p):
            logq = self.time_model.predict_log_quantiles(M)
            # all horizons and quantiles at once (n x 3 arrays): a one-deal request notices each numpy call
            within = p[:, None] * cdf_won_by(logq[:, None, :], np.asarray(HORIZONS, dtype=float)[None, :])
            days = np.expm1(logq)
            at = pd.to_datetime(as_of).to_numpy(dtype=TIMESTAMP_DTYPE) if np.asarray(as_of).dtype.kind != "M" \
                else np.asarray(as_of).astype(TIMESTAMP_DTYPE)
            dates = _add_days_normalized(at[:, None], days)
            for k, h in enumerate(HORIZONS):
                out[f"p_close_within_{h}d"] = within[:, k]
            for k, name in enumerate(("p10", "p50", "p90")):
                out[f"close_days_{name}"] = days[:, k]
                out[f"log_close_days_{name}"] = logq[:, k]
                out[f"expected_close_date_{name}"] = dates[:, k]
        if X is not None:
            out["top_factors"] = self.explain(X, M, method) if contributions is None \
                else self.explainer.explain(X, contributions)
        return out

    def stale_flags(self, M, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`features.staleness.StaleRule.flag` of the rows of M (the model matrix or the
        feature frame): stale per deal, the reason in words (None where not stale), and P(won)
        `p` as `StaleRule.calibrate` serves it: its level by age from the win curve, capped for
        deals older than every win (no extrapolation from young deals to very old ones)."""
        rule, names = getattr(self, "staleness", None), self.feature_names
        n = len(M)
        if rule is None or self.static:
            return np.zeros(n, dtype=bool), np.full(n, None, dtype=object), p
        cols = {name: (M[name].to_numpy(dtype="float64") if isinstance(M, pd.DataFrame)
                       else np.asarray(M, dtype="float64")[:, names.index(name)])
                for name in ("deal_age_days", "days_in_stage", "stage_index") if name in names}
        stale, reason = rule.flag_features(cols, list(self.builder.stages_))
        return stale, reason, rule.calibrate(p, cols["deal_age_days"]) if "deal_age_days" in cols else p

    def explain(self, X, matrix: np.ndarray | None = None, method: str = "path") -> list[dict]:
        """Top positive/negative factors per row from the close model's contributions
        (`method`: "path" attribution, or exact TreeSHAP "shap"; see training/attribution.py);
        none for a model without contributions. X: the feature frame, or {feature: values}
        with categories as text; `matrix`: X already converted for the close model
        (`shared_matrix`), to skip a second conversion."""
        n = len(X) if isinstance(X, pd.DataFrame) else len(next(iter(X.values()), []))
        if not self.explains(n):
            return [{"positive": [], "negative": []} for _ in range(n)]
        return self.explainer.explain(X, self.close_model.contributions(X if matrix is None else matrix, method=method))

    def explains(self, n: int) -> bool:
        """Whether the close model has contributions (is an `ExplainableCloseModel`, checked by
        its method rather than `isinstance`, which costs ~20 us a request) to explain `n` rows with."""
        return self.explainer is not None and n > 0 and hasattr(self.close_model, "predict_proba_and_contributions") \
            and not self.close_model.fallback_


def contribution_method(explain: bool | str) -> str:
    """The contribution method an `explain` argument asks for (False/True: the default, path)."""
    return "path" if explain is True or not explain else str(explain)


def _add_days_normalized(at: np.ndarray, days: np.ndarray) -> np.ndarray:
    """(at + round(days) days) at midnight, NaT where days is not finite."""
    whole = np.where(np.isfinite(days), np.round(days), 0).astype("int64").astype("timedelta64[D]")
    shifted = (at + whole).astype("datetime64[D]").astype(TIMESTAMP_DTYPE)
    return np.where(np.isfinite(days), shifted, np.datetime64("NaT")).astype(TIMESTAMP_DTYPE)


def default_as_of(as_of) -> pd.Timestamp:
    """The request's as-of date, or now (UTC, tz-naive like the canonical tables)."""
    if as_of is None:
        return utc_now()
    ts = pd.Timestamp(as_of)
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts

"""The predictor: feature code + stored history + both models + calibrator, as one object.

This is what is logged to MLflow as one model, what `leadscore score` runs, and what the
BentoML service calls. It scores open deals at an as-of date from canonical tables, so
training and serving share one feature implementation.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.arrays import DealArrays
from features.build import FeatureBuilder
from features.schema import TIMESTAMP_DTYPE, CanonicalData, DatasetMeta
from training.explain import FactorExplainer
from training.models import cdf_won_by, shared_matrix

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

    def score(self, data: CanonicalData, as_of=None, explain: bool | str = False) -> pd.DataFrame:
        """One row per deal open at `as_of` (default: now) with probabilities, score, tier,
        P(won within 30/60/90 days), expected close date P10/P50/P90, optional top factors."""
        return self.score_features(self.features(data, as_of), explain=explain)

    def score_features(self, feats: pd.DataFrame, explain: bool | str = False) -> pd.DataFrame:
        """Scores of feature rows (`features` output): one row each, same order. `explain`:
        False, True (path attribution) or the contribution method, "path" or "shap"."""
        X = feats[self.feature_names]
        M = shared_matrix(X, self.close_model, self.time_model) if len(X) else X  # converted once for all boosters
        return pd.DataFrame(self._outputs(feats["deal_id"].to_numpy(), feats["as_of"].to_numpy(), M,
                                          X if explain else None, _method(explain)))

    def score_arrays(self, arrays: DealArrays, as_of, explain: bool | str = False) -> dict[str, np.ndarray | list]:
        """Scores of request deals (`features.payload.payload_arrays`), all open at `as_of`
        (a time, one time per deal, or None for a static model): the columns of `score`,
        without a frame on the way. The features are `FeatureBuilder.columns`, the same
        code training runs."""
        n = len(arrays)
        if isinstance(as_of, np.ndarray):
            at = as_of.astype(TIMESTAMP_DTYPE)
        else:
            at = np.full(n, np.datetime64("NaT") if as_of is None else np.datetime64(pd.Timestamp(as_of)),
                         dtype=TIMESTAMP_DTYPE)
        cols = self.builder.columns(arrays, np.arange(n), at)
        M = self._matrix(cols)
        if M is None:  # a baseline model (cold start) reads a frame
            feats = pd.DataFrame({"deal_id": arrays.deal_id, "as_of": at, **self._frame_columns(cols)})
            return {c: v.to_numpy() if c != "top_factors" else v.tolist()
                    for c, v in self.score_features(feats, explain=explain).items()}
        return self._outputs(arrays.deal_id, at, M, self._readable(cols) if explain else None, _method(explain))

    def warm(self) -> None:
        """Score one made-up deal so the lookup caches (history tables, category maps,
        explanation paths) are built before the first real request, not during it."""
        from features.payload import payload_arrays

        now = default_as_of(None)
        deal = {"deal_id": "warm-up", "created_at": (now - pd.Timedelta(days=1)).to_pydatetime(),
                **({"stage": self.meta.stages[0]} if self.meta.stages else {})}
        self.score_arrays(payload_arrays([deal], self.meta).arrays, None if self.static else now, explain=True)

    def _outputs(self, deal_id: np.ndarray, as_of: np.ndarray, M, X, method: str = "path"
                 ) -> dict[str, np.ndarray | list]:
        """Output columns from the model matrix; explanations when X (features) is given."""
        contributions = None  # the score and its factors in one pass where the model can
        if X is not None and self._explains(len(deal_id)) and hasattr(self.close_model, "predict_proba_and_contributions"):
            p, contributions = self.close_model.predict_proba_and_contributions(M, method)
        else:
            p = np.asarray(self.close_model.predict_proba(M), dtype=float)
        # columns collected in a dict and framed once: per-column inserts cost more than a one-deal score
        out = {"deal_id": deal_id, "as_of": as_of, "close_probability": p,
               "score": np.clip(np.rint(p * 100), 1, 99).astype(int), "tier": self.tiers.assign(p)}
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

    def _matrix(self, cols: dict[str, np.ndarray]) -> np.ndarray | None:
        """The float matrix `lgb_matrix` would make of these columns (categorical codes
        mapped onto the boosters' category lists), or None for a non-LightGBM model."""
        remap = self.__dict__.get("_remap")
        if remap is None:
            remap = self.__dict__["_remap"] = self._category_remap()
        if remap is False:
            return None
        n = len(next(iter(cols.values()))) if cols else 0
        M = np.empty((n, len(self.feature_names)), dtype="float64")
        for j, name in enumerate(self.feature_names):
            values = cols[name]
            if name in remap:
                codes = remap[name][values]  # -1 (missing/unseen) indexes the last entry, -1
                M[:, j] = np.where(codes >= 0, codes, np.nan)
            else:
                M[:, j] = values
        return M

    def _category_remap(self) -> dict[str, np.ndarray] | bool:
        """Per categorical feature: builder code -> booster code (last entry: -1 for -1)."""
        boosters = [getattr(self.close_model, "booster_", None)]
        if self.time_model is not None:
            boosters += list(getattr(self.time_model, "boosters_", [None]))
        if any(b is None for b in boosters) or list(getattr(self.close_model, "feature_names_in_", [])) \
                != self.feature_names or any(b.pandas_categorical != boosters[0].pandas_categorical for b in boosters):
            return False
        categorical = [n for n in self.feature_names if n in set(self.builder.categorical_features_)]
        trained = boosters[0].pandas_categorical or []
        if len(trained) != len(categorical):
            return False
        remap = {}
        for name, levels in zip(categorical, trained):
            codes = pd.Index(levels).get_indexer(self.builder.categories_[name].astype(object))
            remap[name] = np.r_[codes, -1].astype("int64")
        return remap

    def _frame_columns(self, cols: dict[str, np.ndarray]) -> dict:
        categorical = set(self.builder.categorical_features_)
        return {n: pd.Categorical.from_codes(v, categories=self.builder.categories_[n]) if n in categorical else v
                for n, v in cols.items()}

    def _readable(self, cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Feature columns for explanations: categorical codes as their level text (None if unknown)."""
        text = self.__dict__.get("_level_text")
        if text is None:  # -1 (missing/unseen) indexes the trailing None
            text = self.__dict__["_level_text"] = {
                n: np.array([*self.builder.categories_[n].tolist(), None], dtype=object)
                for n in self.builder.categorical_features_}
        return {name: text[name][values] if name in text else values for name, values in cols.items()}

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_remap", "_level_text")}  # caches

    def explain(self, X, matrix: np.ndarray | None = None, method: str = "path") -> list[dict]:
        """Top positive/negative factors per row from the close model's contributions
        (`method`: "path" attribution, or exact TreeSHAP "shap"; see training/attribution.py);
        none for a model without contributions. X: the feature frame, or {feature: values}
        with categories as text; `matrix`: X already converted for the close model
        (`shared_matrix`), to skip a second conversion."""
        n = len(X) if isinstance(X, pd.DataFrame) else len(next(iter(X.values()), []))
        if not self._explains(n):
            return [{"positive": [], "negative": []} for _ in range(n)]
        return self.explainer.explain(X, self.close_model.contributions(X if matrix is None else matrix, method=method))

    def _explains(self, n: int) -> bool:
        """Whether the close model has contributions to explain `n` rows with."""
        return self.explainer is not None and hasattr(self.close_model, "contributions") and n > 0 \
            and not getattr(self.close_model, "fallback_", False)

    def p_won_between(self, scored: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> np.ndarray:
        """P(won with close date in [start, end)) per scored row, consistent with P(won)."""
        as_of = pd.to_datetime(scored["as_of"])
        logq = scored[["log_close_days_p10", "log_close_days_p50", "log_close_days_p90"]].to_numpy()
        d0 = ((start - as_of).dt.total_seconds() / 86400).clip(lower=0).to_numpy()
        d1 = ((end - as_of).dt.total_seconds() / 86400).clip(lower=0).to_numpy()
        return scored["close_probability"].to_numpy() * (cdf_won_by(logq, d1) - cdf_won_by(logq, d0))


def _method(explain: bool | str) -> str:
    return "path" if explain is True or not explain else str(explain)


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

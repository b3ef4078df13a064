"""Open-pipeline valuation: each deal open at T is worth amount x P(won in the period).

P(won in [start, end)) = close probability x (F(end) - F(start)), F the log-normal
distribution of the time to a won close from the predictor's quantiles.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from features.dates import DAY
from features.errors import NotEnoughData
from features.schema import CanonicalData
from features.staleness import fit_stale_rule
from training.forecast.bookings import BookingRule, booking_rule
from training.forecast.newdeals import ALL
from training.models import cdf_won_by

LOGQ = ["log_close_days_p10", "log_close_days_p50", "log_close_days_p90"]
# model inputs the due dates and the risk list read (the stage state comes from features.snapshots.deals_at)
TIMING_FEATURES = ["days_to_expected_close", "days_since_last_activity"]


@dataclass(frozen=True)
class OpenPipeline:
    """The deals open at T, valued: `deals` has one row per deal (deal_id, group,
    segment, amount, amount_known, value, close_probability, the log close-day
    quantiles, the timing features and p_k = P(won in period k); `with_expectations`
    adds the expectations); `rule` is what a win books; `amount_imputed` counts open
    deals valued at its fallback."""

    deals: pd.DataFrame
    rule: BookingRule
    amount_imputed: int


def score_open_deals(predictor, known: CanonicalData, as_of: pd.Timestamp) -> OpenPipeline:
    """Score the deals open at `as_of` in `known` (the data as known then), once:
    everything but the groups and the p_k (`in_periods` adds them), so a forecast for
    other periods or groups at the same date reuses it."""
    if predictor.static or predictor.time_model is None:
        raise NotEnoughData("this model was trained on a lead export without dates (static mode): a revenue "
                            "forecast needs a model trained on dated deals")
    feats = predictor.features(known, as_of)
    if feats.empty:
        raise NotEnoughData(f"the pipeline is empty: no deal is open at {as_of.date()}, so there is nothing to "
                            f"forecast from; choose an as-of date with open deals")
    scored = predictor.score_features(feats)
    amount = feats["amount"].to_numpy(dtype="float64")
    rule = booking_rule(known.deals, as_of, open_amounts=amount)
    out = scored[["deal_id", "close_probability"] + LOGQ].copy()
    out["amount_known"] = np.isfinite(amount)
    out["amount"] = np.where(np.isfinite(amount), amount, rule.fallback_amount)
    out["value"] = out["amount"]  # what a win books
    deals = known.deals.set_index("deal_id")
    out["segment"] = deals["segment"].reindex(out["deal_id"]).astype("string").to_numpy() if "segment" in deals else None
    for col in TIMING_FEATURES:
        out[col] = feats[col].to_numpy() if col in feats else np.nan
    out["stale"], out["stale_reason"] = fit_stale_rule(known, as_of).flag_features(feats, list(known.meta.stages))
    imputed = 0 if rule.counts_deals else int((~out["amount_known"]).sum())
    return OpenPipeline(deals=out.reset_index(drop=True), rule=rule, amount_imputed=imputed)


def in_periods(scored: OpenPipeline, known: CanonicalData, as_of: pd.Timestamp, per: pd.DataFrame,
               group_by: str | None) -> OpenPipeline:
    """`score_open_deals`' deals (left unchanged) with their group and p_k = P(won in period k)."""
    out = scored.deals.copy()
    out.insert(out.columns.get_loc("value") + 1, "group", group_labels(known.deals.set_index("deal_id"), group_by, out["deal_id"]))
    for k, row in per.iterrows():
        out[f"p_{k}"] = p_won_in(out, as_of, row["start"], row["end"])
    return OpenPipeline(deals=out, rule=scored.rule, amount_imputed=scored.amount_imputed)


def group_labels(deals: pd.DataFrame, group_by: str | None, deal_ids: pd.Series) -> np.ndarray | str:
    """The roll-up group of each deal (deals indexed by deal_id); "(all)" without grouping."""
    if not group_by:
        return ALL
    return deals[group_by].reindex(deal_ids).astype("string").fillna("(none)").astype(str).to_numpy()


def with_expectations(deals: pd.DataFrame, period_factors: Sequence[float]) -> pd.DataFrame:
    """A copy with exp_k = value x p_k x period_factors[k] (the bias-corrected expectation)."""
    out = deals.copy()
    for k, factor in enumerate(period_factors):
        out[f"exp_{k}"] = out["value"] * out[f"p_{k}"] * factor
    return out


def p_won_in(scored: pd.DataFrame, as_of, start, end) -> np.ndarray:
    """P(won with close in [start, end)) per row, the rows scored at `as_of` (scalar or array)."""
    as_of = np.asarray(pd.to_datetime(as_of), dtype="datetime64[us]") if not np.isscalar(as_of) \
        and not isinstance(as_of, pd.Timestamp) else np.datetime64(pd.Timestamp(as_of), "us")
    d0 = np.clip((np.asarray(start, dtype="datetime64[us]") - as_of) / np.timedelta64(1, "D"), 0, None)
    d1 = np.clip((np.asarray(end, dtype="datetime64[us]") - as_of) / np.timedelta64(1, "D"), 0, None)
    logq = scored[LOGQ].to_numpy()
    return scored["close_probability"].to_numpy() * (cdf_won_by(logq, d1) - cdf_won_by(logq, d0))


def stale_pipeline(deals: pd.DataFrame, n_periods: int) -> dict:
    """The stale open deals (`features.staleness`) as the forecast's own line: how many,
    their value, and the bookings expected from them (their model probability, bias-corrected
    like every deal's), per period and in all; these are inside the totals, not added to them."""
    stale = deals["stale"].to_numpy(dtype=bool)
    per_period = [float(deals.loc[stale, f"exp_{k}"].sum()) for k in range(n_periods)]
    return {"stale_open_count": int(stale.sum()), "stale_open_value": float(deals.loc[stale, "value"].sum()),
            "open_count": int(len(deals)), "open_value": float(deals["value"].sum()),
            "stale_expected_bookings": float(sum(per_period)), "stale_expected_by_period": per_period,
            "definition": "stale: open longer than the give-up age as known at the as-of date (fewer than 2 % of "
                          "the deals still open at that age went on to win; at most the longest win), or longer in "
                          "its stage than any deal that went on to win stayed there; valued at the served P(won) "
                          "(its level by age from the learned win curve, features.staleness) and included in the "
                          "forecast totals"}


def due_in(deals: pd.DataFrame, as_of: pd.Timestamp, start: pd.Timestamp, end: pd.Timestamp,
           first: bool) -> np.ndarray:
    """Open deals due in [start, end): expected close date as known at as_of, else the
    model's median close date; overdue dates count in the `first` period."""
    days_to = deals["days_to_expected_close"].to_numpy(dtype="float64")
    median = np.expm1(deals["log_close_days_p50"].to_numpy(dtype="float64"))
    days = np.where(np.isnan(days_to), median, days_to)
    lo = -np.inf if first else (start - as_of) / DAY
    return (days >= lo) & (days < (end - as_of) / DAY)

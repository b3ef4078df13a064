"""Deals not created yet: how many will be created and won inside each forecast period.

Estimated only from what was known at the as-of date T:
- creation rate per segment: deals created in the last `rate_window_days` before T per
  day, times a trend factor (last window / the window before, over all segments,
  clipped to `trend_clip`) applied log-linearly from the middle of the window onwards;
- cohort curve F_s(t) = P(won within t days of creation), from deals created between
  t and t + `cohort_window_days` days before T (so every one of them was observed for
  t days), per segment shrunk toward all segments with `shrinkage` pseudo-deals;
- value of a new win: a bootstrap pool of deals won in the last `pool_days` before T
  (their realised amounts, and their grouping columns for roll-ups), weighted for each
  period by how likely a win of its cycle time lands in it (`window_weights`: the deals
  created and won inside a near period are the quick ones);
- the calendar (`seasonal`; a recent rate and cohort curve carry the last months' season
  into the next ones): once the data covers 52 weeks and a rate window, the wins of the
  same window 52 weeks earlier x the year-over-year growth of creations, shrunk toward
  the rate x cohort estimate with `shrinkage` pseudo-wins (`describe()["seasonal"]`).

A deal created on day c in [T, end) is won inside [start, end) with probability
F(end - c) - F(max(start - c, 0)); summed over the days of creation this gives the
expected number of new wins per period and segment, which the Monte Carlo draws as a
Poisson count (thinning a Poisson creation process keeps it Poisson).
"""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from features.dates import DAY
from features.errors import NotEnoughData
from features.schema import CanonicalData
from training.forecast.bookings import BookingRule, booking_rule

ALL = "(all)"
MIN_HISTORY_DAYS = 28
YEAR_DAYS = 364  # 52 weeks: the window a year earlier has the same weekdays


class NewDealModel(BaseEstimator):
    """Creation rate x cohort win curve x won-amount pool, per segment, as of T.

    `group_column`: the column new wins are rolled up by (their pool keeps it); None
    puts every win in the group "(all)"."""

    def __init__(self, segment_column: str = "segment", group_column: str | None = None,
                 rate_window_days: int = 90, trend_clip: tuple[float, float] = (0.8, 1.25),
                 max_trend_windows: float = 2.0, cohort_window_days: int = 180, pool_days: int = 180,
                 min_pool: int = 30, shrinkage: float = 50.0, max_age_days: int = 400, seasonal: bool = True):
        self.segment_column = segment_column
        self.group_column = group_column
        self.rate_window_days = rate_window_days
        self.trend_clip = trend_clip
        self.max_trend_windows = max_trend_windows
        self.cohort_window_days = cohort_window_days
        self.pool_days = pool_days
        self.min_pool = min_pool
        self.shrinkage = shrinkage
        self.max_age_days = max_age_days
        self.seasonal = seasonal

    def fit(self, data: CanonicalData, as_of, rule: BookingRule | None = None) -> NewDealModel:
        """Learn from deals created at or before `as_of` and outcomes known by then.

        `rule`: what a win books (`training.forecast.bookings`); default: the rule as
        known at `as_of` (unknown amounts at the median won amount known then, 1 per win
        when no amount is known at all, so the forecast counts deals)."""
        as_of = pd.Timestamp(as_of)
        deals = data.deals
        deals = deals.loc[deals["created_at"] <= as_of]
        history_days = float((as_of - deals["created_at"].min()) / DAY) if len(deals) else 0.0
        if history_days < MIN_HISTORY_DAYS:
            raise NotEnoughData(
                f"only {history_days:.0f} days of deal creations before {as_of.date()}: the new-deal "
                f"model needs at least {MIN_HISTORY_DAYS}; choose a later as-of date")
        self.history_days_ = history_days
        self.as_of_ = as_of
        segment = self._segments(deals)
        self.segments_ = sorted(segment.unique())
        won = ((deals["outcome"] == "won").fillna(False).to_numpy(dtype=bool)
               & (deals["closed_at"] <= as_of).fillna(False).to_numpy(dtype=bool))
        self._fit_rates(deals, segment)
        self._fit_cohorts(deals, segment, won)
        self._fit_pool(deals, segment, won, rule or booking_rule(deals, as_of))
        self._fit_season(deals, won)
        return self

    # ---- fit steps ------------------------------------------------------------------
    def _segments(self, deals: pd.DataFrame) -> pd.Series:
        if self.segment_column in deals and deals[self.segment_column].notna().any():
            return deals[self.segment_column].astype("string").fillna("(none)").astype(str)
        return pd.Series(ALL, index=deals.index)

    def _fit_rates(self, deals: pd.DataFrame, segment: pd.Series) -> None:
        window = min(float(self.rate_window_days), self.history_days_)
        age = ((self.as_of_ - deals["created_at"]) / DAY).to_numpy()
        recent = age < window
        counts = segment[recent].value_counts()
        self.rate_per_day_ = {s: float(counts.get(s, 0)) / window for s in self.segments_}
        self.rate_window_used_ = window
        self.trend_ = 1.0
        if self.history_days_ >= 2 * window:
            before = int(((age >= window) & (age < 2 * window)).sum())
            if before >= 30:
                self.trend_ = float(np.clip(recent.sum() / before, *self.trend_clip))

    def _fit_cohorts(self, deals: pd.DataFrame, segment: pd.Series, won: np.ndarray) -> None:
        """F[s, t] for integer ages t = 0..max_age_days (monotone, shrunk to all segments)."""
        age = ((self.as_of_ - deals["created_at"]) / DAY).to_numpy()
        cycle = np.where(won, ((deals["closed_at"] - deals["created_at"]) / DAY).to_numpy(dtype="float64",
                                                                                          na_value=np.nan), np.inf)
        codes = pd.Index(self.segments_).get_indexer(segment).astype("int64")
        n_seg, ages = len(self.segments_), np.arange(self.max_age_days + 1)
        keep = age < self.max_age_days + self.cohort_window_days
        age, cycle, codes = age[keep], cycle[keep], codes[keep]
        # a deal is seen at the integer ages t with t <= age < t + window, and won by t when
        # also cycle <= t: intervals of t, counted with one difference array each
        first_seen = np.floor(age - self.cohort_window_days) + 1
        last_seen = np.floor(age)
        seen = np.zeros((n_seg + 1, ages.size))
        wins = np.zeros((n_seg + 1, ages.size))
        seen[:n_seg] = _interval_counts(codes, first_seen, last_seen, n_seg, ages.size)
        wins[:n_seg] = _interval_counts(codes, np.maximum(first_seen, np.ceil(cycle)), last_seen, n_seg, ages.size)
        seen[n_seg], wins[n_seg] = seen[:n_seg].sum(axis=0), wins[:n_seg].sum(axis=0)
        overall = _plateau(wins[n_seg], seen[n_seg])
        k = self.shrinkage
        curves = (np.nan_to_num(wins[:n_seg]) + k * overall) / (seen[:n_seg] + k)
        observed = seen[n_seg] > 0
        last = np.flatnonzero(observed).max() if observed.any() else 0
        curves[:, last + 1:] = curves[:, [last]]  # ages never observed: the last observed level
        self.cohort_ = np.maximum.accumulate(curves, axis=1)
        self.cohort_overall_ = overall
        self.cohort_max_observed_age_ = int(last)

    def _fit_pool(self, deals: pd.DataFrame, segment: pd.Series, won: np.ndarray, rule: BookingRule) -> None:
        """Wins closed before T with their booked value, segment, group and age; per
        segment the recent ones are used (see `pool_for`)."""
        closed_age = ((self.as_of_ - deals["closed_at"]) / DAY).to_numpy(dtype="float64", na_value=np.nan)
        cycle = ((deals["closed_at"] - deals["created_at"]) / DAY).to_numpy(dtype="float64", na_value=np.nan)
        amount = deals["amount"] if "amount" in deals else pd.Series(np.nan, index=deals.index)
        values = rule.booked(amount).to_numpy(dtype="float64")
        self.counts_deals_ = rule.counts_deals
        group = deals[self.group_column].astype("string").fillna("(none)").astype(str) if self.group_column else \
            pd.Series(ALL, index=deals.index)
        self.pool_ = pd.DataFrame({"segment": segment.to_numpy()[won], "value": values[won],
                                   "group": group.to_numpy()[won], "age_days": closed_age[won],
                                   "cycle_days": cycle[won]})
        self.pools_ = {s: self._recent_pool(s) for s in self.segments_}

    def _fit_season(self, deals: pd.DataFrame, won: np.ndarray) -> None:
        """The year-earlier creations and win days (days after T - 52 weeks) and the
        year-over-year growth of creations; None without a year and a rate window of history."""
        self.season_ = None
        window = float(self.rate_window_days)
        if not self.seasonal or self.history_days_ < YEAR_DAYS + window:
            return
        age = ((self.as_of_ - deals["created_at"]) / DAY).to_numpy()
        recent, year_before = int((age < window).sum()), int(((age >= YEAR_DAYS) & (age < YEAR_DAYS + window)).sum())
        if recent == 0 or year_before == 0:
            return
        mine = age < YEAR_DAYS  # created after T - 52 weeks; won_day: days after T - 52 weeks
        cycle = ((deals["closed_at"] - deals["created_at"]) / DAY).to_numpy(dtype="float64", na_value=np.nan)
        self.season_ = {"growth": recent / year_before, "won_day": np.where(won, YEAR_DAYS - age + cycle, np.inf)[mine]}

    def _seasonal_ratio(self, a: float, b: float, estimate: float) -> float:
        """Year-earlier wins in [a, b) days (x growth) over the rate x cohort `estimate`,
        both shrunk with `shrinkage` pseudo-wins; 1 without a season or past 52 weeks."""
        if self.season_ is None or b > YEAR_DAYS or estimate <= 0:
            return 1.0
        day = self.season_["won_day"]
        year_before = float(((day >= a) & (day < b)).sum()) * self.season_["growth"]
        return (year_before + self.shrinkage) / (estimate + self.shrinkage)

    def _recent_pool(self, segment: str) -> pd.DataFrame:
        """The segment's wins of the last `pool_days`, widened to a year and then to all
        history while fewer than `min_pool`; all segments' recent wins if the segment
        never had `min_pool`."""
        pool = self.pool_
        mine = pool.loc[pool["segment"] == segment]
        for days in (self.pool_days, 365, np.inf):
            chosen = mine.loc[mine["age_days"] < days]
            if len(chosen) >= self.min_pool:
                return chosen
        recent = pool.loc[pool["age_days"] < self.pool_days]
        return recent if len(recent) >= self.min_pool else pool

    # ---- predictions -------------------------------------------------------------------
    def creation_rate(self, days_ahead: np.ndarray) -> np.ndarray:
        """(n_segments, n_days) expected creations per day at `days_ahead` days after T."""
        check_is_fitted(self)
        mid = -self.rate_window_used_ / 2
        windows = np.clip((days_ahead - mid) / self.rate_window_used_, 0, self.max_trend_windows)
        base = np.array([self.rate_per_day_[s] for s in self.segments_])
        return base[:, None] * self.trend_ ** windows[None, :]

    def expected_wins(self, starts: pd.DatetimeIndex, ends: pd.DatetimeIndex) -> np.ndarray:
        """(n_segments, n_periods) expected number of deals created after T and won in [start, end)."""
        t0 = self.as_of_
        horizon = float((max(ends) - t0) / DAY)
        c = np.arange(0.0, np.ceil(horizon)) + 0.5  # creation days (mid-day), days after T
        width = np.minimum(1.0, horizon - (c - 0.5))  # the last day may be partial
        rate = self.creation_rate(c) * width[None, :]
        out = np.zeros((len(self.segments_), len(starts)))
        for k, (s, e) in enumerate(zip(starts, ends)):
            a, b = float((s - t0) / DAY), float((e - t0) / DAY)
            p = self._cohort_at(b - c) - self._cohort_at(np.maximum(a - c, 0.0))
            p = np.where(c < b, p, 0.0)
            out[:, k] = (rate * p).sum(axis=1)
            out[:, k] *= self._seasonal_ratio(a, b, float(out[:, k].sum()))
        return out

    def _cohort_at(self, age: np.ndarray) -> np.ndarray:
        grid = np.arange(self.cohort_.shape[1], dtype="float64")
        age = np.clip(age, 0.0, grid[-1])
        return np.vstack([np.interp(age, grid, row) for row in self.cohort_])

    def pool_for(self, segment: str) -> pd.DataFrame:
        """Wins a new win's value in `segment` is drawn from (see `_recent_pool`)."""
        check_is_fitted(self)
        return self.pools_[segment]

    def window_weights(self, segment: str, window: tuple[float, float] | None = None) -> np.ndarray:
        """Weights (sum 1) of `pool_for(segment)`'s wins as the value of a new win in `window` =
        (a, b) days after T: a win of cycle x stands for the creation days c >= 0 with a <= c + x
        < b (quick, often smaller deals fill a near window); equal without a window or quick win."""
        pool = self.pool_for(segment)
        n = len(pool)
        if window is None or n == 0:
            return np.full(n, 1.0 / max(n, 1))
        a, b = window
        x = pool["cycle_days"].to_numpy(dtype="float64")
        w = np.clip((b - x) - np.maximum(0.0, a - x), 0.0, None)
        w = np.where(np.isfinite(w), w, 0.0)
        return w / w.sum() if w.sum() > 0 else np.full(n, 1.0 / n)

    def windows(self, starts: pd.DatetimeIndex, ends: pd.DatetimeIndex) -> list[tuple[float, float]]:
        """Each period as (a, b) days after T (see `window_weights`)."""
        return [(max(float((s - self.as_of_) / DAY), 0.0), float((e - self.as_of_) / DAY)) for s, e in zip(starts, ends)]

    def mean_value(self, segment: str, window: tuple[float, float] | None = None) -> float:
        """Mean booked value of a new win in `segment` (in `window`: see `window_weights`)."""
        pool = self.pool_for(segment)
        return float(pool["value"].to_numpy() @ self.window_weights(segment, window)) if len(pool) else 0.0

    def value_by_group(self, segment: str, window: tuple[float, float] | None = None) -> pd.Series:
        """Mean value per new win split over groups (sums to `mean_value`)."""
        pool = self.pool_for(segment)
        if pool.empty:
            return pd.Series(dtype="float64")
        return (pool["value"] * self.window_weights(segment, window)).groupby(pool["group"]).sum()

    def scaled(self, factor: float) -> NewDealModel:
        """A copy whose pool values are multiplied by `factor` (a bias correction of the
        new-win value); this model is left unchanged."""
        check_is_fitted(self)
        out = copy.copy(self)
        out.pool_ = self.pool_.assign(value=self.pool_["value"] * float(factor))
        out.pools_ = {s: pool.assign(value=pool["value"] * float(factor)) for s, pool in self.pools_.items()}
        return out

    def value_per_lead(self) -> float:
        """Expected eventual won value of one new deal of the average kind (segments
        weighted by their recent creation rate): eventual win share x mean won value."""
        rates = np.array([self.rate_per_day_[s] for s in self.segments_])
        values = np.array([self.cohort_[i, -1] * self.mean_value(s) for i, s in enumerate(self.segments_)])
        return float((rates * values).sum() / rates.sum()) if rates.sum() > 0 else 0.0

    def describe(self) -> dict:
        """Per segment: creations per day, won within 90 days, mean won value; the trend."""
        check_is_fitted(self)
        return {"segments": {s: {"created_per_day": self.rate_per_day_[s],
                                 "won_within_90d": float(self.cohort_[i, min(90, self.cohort_.shape[1] - 1)]),
                                 "mean_won_value": self.mean_value(s)}
                             for i, s in enumerate(self.segments_)},
                "trend_per_window": self.trend_, "rate_window_days": self.rate_window_used_,
                "seasonal": None if self.season_ is None else {"year_over_year_growth": float(self.season_["growth"]),
                                                               "note": "wins of the window 52 weeks earlier x growth"},
                "cohort_observed_up_to_days": self.cohort_max_observed_age_, "pool_size": int((self.pool_["age_days"] < self.pool_days).sum())}


def _interval_counts(codes: np.ndarray, lo: np.ndarray, hi: np.ndarray, n_seg: int, n_ages: int) -> np.ndarray:
    """(n_seg, n_ages): per segment, how many of the integer intervals [lo, hi] (clipped to
    0..n_ages-1; empty when lo > hi) contain each age."""
    lo = np.clip(lo, 0, n_ages)
    hi = np.clip(hi, -1, n_ages - 1)
    ok = np.isfinite(lo) & np.isfinite(hi) & (lo <= hi)
    lo, hi, codes = lo[ok].astype("int64"), hi[ok].astype("int64"), codes[ok]
    diff = np.bincount(codes * (n_ages + 1) + lo, minlength=n_seg * (n_ages + 1)) \
        - np.bincount(codes * (n_ages + 1) + hi + 1, minlength=n_seg * (n_ages + 1))
    return np.cumsum(diff.reshape(n_seg, n_ages + 1), axis=1)[:, :n_ages].astype("float64")


def _plateau(wins: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Cumulative win share per age, carrying the last observed value over unobserved ages."""
    rate = np.divide(wins, seen, out=np.full(wins.shape, np.nan), where=seen > 0)
    rate = pd.Series(rate).ffill().fillna(0.0).to_numpy()
    return np.maximum.accumulate(rate)

"""Monte Carlo over deal outcomes, close timing and new-win counts, and the summary table.

P10/P50/P90 come from a seeded Monte Carlo over deal outcomes, close timing and Poisson
new-win counts, plus a common shock per simulation (see `training.forecast.calibration`):
deals are not independent in real life (a slow quarter hits every deal), and intervals
that assume they are come out too narrow. The expectation reported is the analytic one
(no shock), so roll-ups add up to it exactly.

A period's landing is what was closed-won in it up to the as-of date (the same in every
simulation) plus the simulated rest; its quantiles are quantiles of the simulated
landings, never sums of quantiles. `Simulation` keeps the draws so that the target
report reads the very simulation the forecast summarises.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from features.dates import DAY
from features.deadline import checkpoint
from training.forecast.config import ForecastConfig
from training.forecast.newdeals import ALL, NewDealModel
from training.forecast.valuation import LOGQ
from training.models import lognormal_params


@dataclass(frozen=True)
class Simulation:
    """Simulated bookings per (simulation, group, period) and what was closed so far."""

    groups: list[str]
    open: np.ndarray  # (n_sims, n_groups, n_periods): the open pipeline's wins
    new: np.ndarray  # (n_sims, n_groups, n_periods): wins of deals not created yet
    closed: np.ndarray  # (n_groups, n_periods): closed-won so far (bookings rule), the same in every simulation

    def _mask(self, group: str) -> np.ndarray:
        return np.ones(len(self.groups), bool) if group == ALL else np.asarray(self.groups) == group

    def rest(self, group: str = ALL) -> np.ndarray:
        """(n_sims, n_periods): bookings still to come, for one group or all (`ALL`)."""
        m = self._mask(group)
        return (self.open[:, m] + self.new[:, m]).sum(axis=1)

    def open_pipeline(self, group: str = ALL) -> np.ndarray:
        """(n_sims, n_periods): the open pipeline's part of the rest."""
        return self.open[:, self._mask(group)].sum(axis=1)

    def closed_so_far(self, group: str = ALL) -> np.ndarray:
        """(n_periods,): closed-won so far."""
        return self.closed[self._mask(group)].sum(axis=0)

    def landing(self, group: str = ALL) -> np.ndarray:
        """(n_sims, n_periods): closed so far + the simulated rest."""
        return self.closed_so_far(group)[None, :] + self.rest(group)


def simulate(pipe: pd.DataFrame, newm: NewDealModel, per: pd.DataFrame, period_factors: Sequence[float],
             config: ForecastConfig, relative_sd: float, groups: list[str], closed: pd.DataFrame) -> Simulation:
    """Simulated bookings (n_sims, n_groups, n_periods) for the open pipeline and new deals.

    One standard-normal draw z per simulation moves both parts together: a logit shift
    of every open deal's P(won) of size relative_sd / mean(1 - p) (so the expected
    open-pipeline bookings move by about relative_sd x z) and a creation multiplier
    exp(relative_sd z - relative_sd^2 / 2) (mean 1) on the new-win counts. `groups` must
    hold every group of `pipe`, of the new-deal pool and of `closed` (group x period)."""
    rng = np.random.default_rng([int(config.seed), 11])
    z = rng.standard_normal(config.n_sims)
    open_sims = _simulate_open(pipe, per, period_factors, groups, z, relative_sd, config, rng)
    new_sims = _simulate_new(newm, per, groups, z, relative_sd, config, rng)
    closed_so_far = closed.reindex(index=groups, columns=range(len(per))).fillna(0.0).to_numpy()
    return Simulation(groups=list(groups), open=open_sims, new=new_sims, closed=closed_so_far)


def _logit_shift_scale(pipe: pd.DataFrame, relative_sd: float) -> float:
    w = pipe["amount"].to_numpy() * pipe["close_probability"].to_numpy()
    one_minus_p = np.average(1 - pipe["close_probability"].to_numpy(), weights=w) if w.sum() > 0 else 0.5
    return relative_sd / max(one_minus_p, 0.05)


def _simulate_open(pipe: pd.DataFrame, per: pd.DataFrame, period_factors: Sequence[float], groups: list[str],
                   z: np.ndarray, relative_sd: float, config: ForecastConfig, rng: np.random.Generator) -> np.ndarray:
    n, n_per, n_grp, n_sims = len(pipe), len(per), len(groups), len(z)
    out = np.zeros((n_sims, n_grp, n_per))
    p = np.clip(pipe["close_probability"].to_numpy(), 1e-6, 1 - 1e-6)
    mu, sigma = lognormal_params(pipe[LOGQ].to_numpy())
    as_of = per["start"].iloc[0]
    bounds = ((pd.DatetimeIndex(per["start"]).append(pd.DatetimeIndex(per["end"][-1:])) - as_of) / DAY).to_numpy()
    amount = pipe["value"].to_numpy()
    factor = np.asarray(period_factors, dtype="float64")
    gcode = pd.Index(groups).get_indexer(pipe["group"])
    shift = _logit_shift_scale(pipe, relative_sd) * z
    logit_p = logit(p)
    block = max(1, config.block_paths // max(n, 1))
    for first in range(0, n_sims, block):
        checkpoint()  # a /forecast past its timeout stops here
        b = min(block, n_sims - first)
        won = rng.random((b, n)) < expit(logit_p[None, :] + shift[first:first + b, None])
        noise = rng.standard_normal((b, n))
        sim, deal = np.nonzero(won)  # close timing matters for won paths only
        days = np.expm1(mu[deal] + sigma[deal] * noise[sim, deal])
        k = np.searchsorted(bounds, days, side="right") - 1
        hit = (k >= 0) & (k < n_per)
        sim, deal, k = sim[hit], deal[hit], k[hit]
        idx = (sim * n_grp + gcode[deal]) * n_per + k
        out[first:first + b] = np.bincount(idx, amount[deal] * factor[k],
                                           minlength=b * n_grp * n_per).reshape(b, n_grp, n_per)
    return out


def _simulate_new(newm: NewDealModel, per: pd.DataFrame, groups: list[str], z: np.ndarray, relative_sd: float,
                  config: ForecastConfig, rng: np.random.Generator) -> np.ndarray:
    n_per, n_grp, n_sims = len(per), len(groups), len(z)
    out = np.zeros((n_sims, n_grp, n_per))
    starts, ends = pd.DatetimeIndex(per["start"]), pd.DatetimeIndex(per["end"])
    expected = newm.expected_wins(starts, ends)
    windows = newm.windows(starts, ends)
    mult = np.exp(relative_sd * z - relative_sd ** 2 / 2)
    gindex = pd.Index(groups)
    for s_idx, segment in enumerate(newm.segments_):
        checkpoint()
        pool = newm.pool_for(segment)
        if pool.empty:
            continue
        values, gcode = pool["value"].to_numpy(), gindex.get_indexer(pool["group"])
        counts = rng.poisson(mult[:, None] * expected[s_idx][None, :])  # (n_sims, n_per)
        weights = np.stack([newm.window_weights(segment, w) for w in windows])  # a period's own weights
        for first, last in _blocks(counts.sum(axis=1), config.block_paths):  # one block unless many draws
            checkpoint()
            b = last - first
            sim = np.repeat(np.repeat(np.arange(b), n_per), counts[first:last].ravel())
            k = np.repeat(np.tile(np.arange(n_per), b), counts[first:last].ravel())
            draws = _draw_by_period(weights, k, rng)
            idx = (sim * n_grp + gcode[draws]) * n_per + k
            out[first:last] += np.bincount(idx, values[draws], minlength=b * n_grp * n_per).reshape(b, n_grp, n_per)
    return out


def _draw_by_period(weights: np.ndarray, k: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An index into the pool for each win, drawn with the weights (n_per, n_pool) of its
    period `k`: one inverse-CDF search over the periods' cumulative weights laid end to end
    (row j shifted by j), instead of a `choice` and a mask per period."""
    n_per, n_pool = weights.shape
    cum = np.cumsum(weights, axis=1)
    cum = cum / cum[:, -1:] + np.arange(n_per)[:, None]
    found = np.searchsorted(cum.ravel(), rng.random(len(k)) + k, side="right") - k * n_pool
    return np.minimum(found, n_pool - 1)


def _blocks(draws_per_sim: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """Consecutive simulation ranges of at most ~`limit` draws each (at least one simulation):
    36 quarters of new deals drew tens of millions at once, gigabytes of index arrays."""
    total = np.cumsum(draws_per_sim)
    bounds, first = [], 0
    while first < len(total):
        before = total[first - 1] if first else 0
        last = max(first + 1, int(np.searchsorted(total, before + limit, side="right")))
        bounds.append((first, min(last, len(total))))
        first = last
    return bounds


def summarise(pipe: pd.DataFrame, newm: NewDealModel, per: pd.DataFrame, sims: Simulation,
              group_by: str | None) -> pd.DataFrame:
    """Rows per (period, group) plus the total (group "(all)"): analytic expectations
    (open pipeline, new deals, their sum), simulated P10/P50/P90 of the rest of the
    period, closed-won so far and the simulated landing's P10/P50/P90."""
    groups = sims.groups
    n_per = len(per)
    exp_open = pipe.groupby("group")[[f"exp_{k}" for k in range(n_per)]].sum().reindex(groups).fillna(0.0).to_numpy()
    starts, ends = pd.DatetimeIndex(per["start"]), pd.DatetimeIndex(per["end"])
    expected = newm.expected_wins(starts, ends)
    exp_new = np.zeros((len(groups), n_per))
    for s_idx, segment in enumerate(newm.segments_):
        for k, window in enumerate(newm.windows(starts, ends)):
            exp_new[:, k] += newm.value_by_group(segment, window).reindex(groups).fillna(0.0).to_numpy() \
                * expected[s_idx, k]
    shown = [ALL] + (list(groups) if group_by else [])
    frames = []
    for group in shown:
        checkpoint()
        mask = np.ones(len(groups), bool) if group == ALL else np.asarray(groups) == group
        rest, landing = sims.rest(group), sims.landing(group)
        q, lq = np.quantile(rest, [0.1, 0.5, 0.9], axis=0), np.quantile(landing, [0.1, 0.5, 0.9], axis=0)
        oq = np.quantile(sims.open_pipeline(group), [0.1, 0.9], axis=0)
        e_open, e_new, closed = exp_open[mask].sum(axis=0), exp_new[mask].sum(axis=0), sims.closed_so_far(group)
        frames.append(pd.DataFrame({
            "period": per["period"], "start": per["start"], "end": per["end"], "partial": per["partial"].astype(bool),
            "group": group, "expected": e_open + e_new, "open_pipeline": e_open, "new_deals": e_new,
            "p10": q[0], "p50": q[1], "p90": q[2], "open_pipeline_p10": oq[0], "open_pipeline_p90": oq[1],
            "closed_so_far": closed, "landing_expected": closed + e_open + e_new,
            "landing_p10": lq[0], "landing_p50": lq[1], "landing_p90": lq[2], "_k": np.arange(n_per)}))
    table = pd.concat(frames, ignore_index=True)  # group-major: reorder period-major, the total first
    return table.sort_values("_k", kind="stable").drop(columns="_k").reset_index(drop=True)

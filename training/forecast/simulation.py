"""Monte Carlo over deal outcomes, close timing and new-win counts, and the summary table.

P10/P50/P90 come from a seeded Monte Carlo over deal outcomes, close timing and Poisson
new-win counts, plus a common shock per simulation (see `training.forecast.calibration`):
deals are not independent in real life (a slow quarter hits every deal), and intervals
that assume they are come out too narrow. The expectation reported is the analytic one
(no shock), so roll-ups add up to it exactly.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from features.dates import DAY
from training.forecast.config import ForecastConfig
from training.forecast.newdeals import ALL, NewDealModel
from training.forecast.valuation import LOGQ
from training.models import lognormal_params


def simulate(pipe: pd.DataFrame, newm: NewDealModel, per: pd.DataFrame, period_factors: Sequence[float],
             config: ForecastConfig, relative_sd: float) -> dict:
    """Simulated bookings (n_sims, n_groups, n_periods) for the open pipeline and new deals.

    One standard-normal draw z per simulation moves both parts together: a logit shift
    of every open deal's P(won) of size relative_sd / mean(1 - p) (so the expected
    open-pipeline bookings move by about relative_sd x z) and a creation multiplier
    exp(relative_sd z - relative_sd^2 / 2) (mean 1) on the new-win counts."""
    rng = np.random.default_rng([int(config.seed), 11])
    groups = sorted(set(pipe["group"]) | set(newm.pool_["group"]))
    z = rng.standard_normal(config.n_sims)
    open_sims = _simulate_open(pipe, per, period_factors, groups, z, relative_sd, config, rng)
    new_sims = _simulate_new(newm, per, groups, z, relative_sd, config, rng)
    return {"groups": groups, "open": open_sims, "new": new_sims}


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
    block = max(1, config.block_paths // max(n, 1))
    for first in range(0, n_sims, block):
        b = min(block, n_sims - first)
        p_sim = expit(logit(p)[None, :] + shift[first:first + b, None])
        won = rng.random((b, n)) < p_sim
        days = np.expm1(mu[None, :] + sigma[None, :] * rng.standard_normal((b, n)))
        k = np.searchsorted(bounds, days, side="right") - 1
        hit = won & (k >= 0) & (k < n_per)
        sim = np.broadcast_to(np.arange(b)[:, None], (b, n))[hit]
        idx = (sim * n_grp + np.broadcast_to(gcode, (b, n))[hit]) * n_per + k[hit]
        vals = np.broadcast_to(amount, (b, n))[hit] * factor[k[hit]]
        out[first:first + b] = np.bincount(idx, vals, minlength=b * n_grp * n_per).reshape(b, n_grp, n_per)
    return out


def _simulate_new(newm: NewDealModel, per: pd.DataFrame, groups: list[str], z: np.ndarray, relative_sd: float,
                  config: ForecastConfig, rng: np.random.Generator) -> np.ndarray:
    n_per, n_grp, n_sims = len(per), len(groups), len(z)
    out = np.zeros((n_sims, n_grp, n_per))
    expected = newm.expected_wins(pd.DatetimeIndex(per["start"]), pd.DatetimeIndex(per["end"]))
    mult = np.exp(relative_sd * z - relative_sd ** 2 / 2)
    gindex = pd.Index(groups)
    for s_idx, segment in enumerate(newm.segments_):
        pool = newm.pool_for(segment)
        if pool.empty:
            continue
        values, gcode = pool["value"].to_numpy(), gindex.get_indexer(pool["group"])
        counts = rng.poisson(mult[:, None] * expected[s_idx][None, :])  # (n_sims, n_per)
        draws = rng.integers(0, len(pool), counts.sum())
        sim = np.repeat(np.repeat(np.arange(n_sims), n_per), counts.ravel())
        k = np.repeat(np.tile(np.arange(n_per), n_sims), counts.ravel())
        idx = (sim * n_grp + gcode[draws]) * n_per + k
        out += np.bincount(idx, values[draws], minlength=n_sims * n_grp * n_per).reshape(n_sims, n_grp, n_per)
    return out


def summarise(pipe: pd.DataFrame, newm: NewDealModel, per: pd.DataFrame, sims: dict,
              group_by: str | None) -> pd.DataFrame:
    """Rows per (period, group) plus the total (group "(all)"): analytic expectations
    (open pipeline, new deals, their sum) and simulated P10/P50/P90."""
    groups = sims["groups"]
    n_per = len(per)
    exp_open = pipe.groupby("group")[[f"exp_{k}" for k in range(n_per)]].sum().reindex(groups).fillna(0.0).to_numpy()
    expected = newm.expected_wins(pd.DatetimeIndex(per["start"]), pd.DatetimeIndex(per["end"]))
    exp_new = np.zeros((len(groups), n_per))
    for s_idx, segment in enumerate(newm.segments_):
        share = newm.value_by_group(segment).reindex(groups).fillna(0.0).to_numpy()
        exp_new += share[:, None] * expected[s_idx][None, :]
    total = sims["open"] + sims["new"]
    rows = []
    for k, prow in per.iterrows():
        def row(group, e_open, e_new, draws):
            q = np.quantile(draws, [0.1, 0.5, 0.9])
            return {"period": prow["period"], "start": prow["start"], "end": prow["end"],
                    "partial": bool(prow["partial"]), "group": group, "expected": e_open + e_new,
                    "open_pipeline": e_open, "new_deals": e_new, "p10": q[0], "p50": q[1], "p90": q[2],
                    "open_pipeline_p10": np.quantile(draws_open, 0.1), "open_pipeline_p90": np.quantile(draws_open, 0.9)}
        draws_open = sims["open"][:, :, k].sum(axis=1)
        rows.append(row(ALL, float(exp_open[:, k].sum()), float(exp_new[:, k].sum()), total[:, :, k].sum(axis=1)))
        if group_by:
            for g_idx, group in enumerate(groups):
                draws_open = sims["open"][:, g_idx, k]
                rows.append(row(group, float(exp_open[g_idx, k]), float(exp_new[g_idx, k]), total[:, g_idx, k]))
    return pd.DataFrame(rows)

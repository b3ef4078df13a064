"""Oracle bookings forecast: won amount closing in [origin, end) under the true process,
simulated forward from the state at `origin` (never from the realised future)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special

from features.errors import NotEnoughData
from features.schema import CanonicalData
from features.synthetic.oracle import days_since_start, open_deal_states, spell_posterior, truth_params
from features.synthetic.params import ADVANCE, REGRESS, GeneratorParams
from features.synthetic.population import (
    creation_intensity,
    make_population,
    sample_creation_days,
    sample_deals,
    sample_latent,
    window_days,
)
from features.synthetic.process import dwell_scale, final_log_amount_change, simulate

PATHS_PER_BLOCK = 1_000_000  # bounds memory: open deals x sims simulated per block


def oracle_bookings(data: CanonicalData, truth: pd.DataFrame, origin, end, n_sims: int = 500,
                    seed: int = 0, params: GeneratorParams | None = None) -> dict:
    """Expected won amount with close date in [origin, end): from deals open at origin
    (their current spell's exit drawn from the posterior given the time already spent,
    its remaining dwell from the gamma truncated there, then the true process onwards)
    and from deals created later (the true creation intensity). Totals per simulation
    give P10/P50/P90. `origin` and `end` are used at day resolution for new deals."""
    p = params or truth_params(truth)
    rng = np.random.default_rng([int(seed), 7])
    t0, t1 = float(days_since_start(pd.Timestamp(origin), p)), float(days_since_start(pd.Timestamp(end), p))
    if t1 <= t0:
        raise NotEnoughData(f"the forecast period is empty: end {end} must be after origin {origin}")
    open_totals, per_deal = _open_pipeline(data, truth, pd.Timestamp(origin), t0, t1, n_sims, p, rng)
    n_created = int((data.deals["created_at"] <= pd.Timestamp(origin)).sum())
    new_totals, new_expected = _new_deals(n_created, t0, t1, n_sims, p, rng)
    total = open_totals + new_totals
    open_expected = float(per_deal["expected_amount"].sum())
    return {"open_pipeline": open_expected, "new_deals": new_expected, "total": open_expected + new_expected,
            "p10": float(np.quantile(total, 0.1)), "p50": float(np.quantile(total, 0.5)),
            "p90": float(np.quantile(total, 0.9)), "per_deal": per_deal}


def _open_pipeline(data, truth, origin: pd.Timestamp, t0: float, t1: float, n_sims: int,
                   p: GeneratorParams, rng: np.random.Generator) -> tuple[np.ndarray, pd.DataFrame]:
    st = open_deal_states(data, truth, origin)
    n = len(st)
    totals, value_sum, won_sum = np.zeros(n_sims), np.zeros(n), np.zeros(n)
    block = max(1, PATHS_PER_BLOCK // max(n, 1))
    for first in range(0, n_sims, block):
        b = min(block, n_sims - first)
        idx = np.tile(np.arange(n), b)
        won, closed, log_change = _futures(st, idx, t0, p, rng)
        value = np.where(won & (closed >= t0) & (closed < t1), st["amount"].to_numpy()[idx] * np.exp(log_change), 0.0)
        totals[first:first + b] = value.reshape(b, n).sum(axis=1)
        value_sum += np.bincount(idx, value, minlength=n)
        won_sum += np.bincount(idx, won, minlength=n)
    per_deal = pd.DataFrame({"deal_id": st["deal_id"].to_numpy(), "expected_amount": value_sum / n_sims,
                             "p_won_simulated": won_sum / n_sims})
    return totals, per_deal


def _futures(st: pd.DataFrame, idx: np.ndarray, t0: float, p: GeneratorParams, rng: np.random.Generator,
             max_rounds: int = 100) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Simulate each path from its deal's state; paths whose won close the quarter-end pull
    moved to before t0 contradict the observed state (the deal is open) and are redrawn
    (rejection sampling), which makes the draw exact."""
    won, closed, change = np.zeros(idx.size, bool), np.zeros(idx.size), np.zeros(idx.size)
    todo = np.arange(idx.size)
    for _ in range(max_rounds):
        w, c, ch = _simulate_from_state(st, idx[todo], t0, p, rng)
        won[todo], closed[todo], change[todo] = w, c, ch
        todo = todo[c <= t0]
        if not todo.size:
            break
    return won, closed, change


def _simulate_from_state(st: pd.DataFrame, idx: np.ndarray, t0: float, p: GeneratorParams,
                         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z, stage = st["logit"].to_numpy()[idx], st["stage"].to_numpy()[idx]
    regs, mult = st["regressions"].to_numpy()[idx], st["dwell_multiplier"].to_numpy()[idx]
    entered = days_since_start(st["spell_entered_at"], p)[idx]
    post = spell_posterior(z, stage, regs, mult, entered, t0, p, with_pull=False)
    u = rng.random(idx.size)
    kind = (u >= post[:, REGRESS]).astype("int64") + (u >= post[:, REGRESS] + post[:, ADVANCE])
    scale = dwell_scale(stage, kind, mult, p)
    surv = special.gammaincc(p.dwell_shape, np.maximum(t0 - entered, 0.0) / scale)
    dwell = scale * special.gammainccinv(p.dwell_shape, rng.random(idx.size) * surv)
    end = np.where(np.isfinite(dwell) & (entered + dwell > t0), entered + dwell, t0 + 1e-6)
    paths = simulate(stage, regs, entered, z, mult, p, rng, first_kind=kind, first_end=end)
    change = final_log_amount_change(paths, np.full(idx.size, t0), p, rng)
    return paths.won, paths.closed, change


def _new_deals(n_created: int, t0: float, t1: float, n_sims: int, p: GeneratorParams,
               rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Deals created in [t0, t1): inside the window the count is Binomial(deals still to be
    created, their share of the remaining intensity) (the generator creates exactly
    n_deals); past the window, Poisson with the same intensity curve extended. Values come
    from a pool of deals simulated from creation, drawn with replacement per simulation."""
    horizon = window_days(p)
    days_in, rate_in = creation_intensity(t0, min(t1, horizon), p)
    rest = creation_intensity(t0, horizon, p)[1].sum()
    remaining = max(p.n_deals - n_created, 0)
    share = rate_in.sum() / rest if rest > 0 else 0.0
    days_out, rate_out = creation_intensity(max(t0, horizon), t1, p) if t1 > horizon else (np.zeros(0), np.zeros(0))
    expected_n = remaining * share + rate_out.sum()
    if expected_n <= 0:
        return np.zeros(n_sims), 0.0
    days = np.concatenate([days_in, days_out])
    weight = np.concatenate([rate_in / rest * remaining if rest > 0 else rate_in * 0, rate_out])
    value = _pool_values(int(min(max(4_000, 4 * expected_n), 400_000)), days, weight, t0, t1, p, rng)
    count = rng.binomial(remaining, min(share, 1.0), n_sims) + rng.poisson(rate_out.sum(), n_sims)
    draws = value[rng.integers(0, value.size, count.sum())]
    totals = np.bincount(np.repeat(np.arange(n_sims), count), draws, minlength=n_sims)
    return totals, float(expected_n * value.mean())


def _pool_values(m: int, days: np.ndarray, weight: np.ndarray, t0: float, t1: float, p: GeneratorParams,
                 rng: np.random.Generator) -> np.ndarray:
    """Won amount inside [t0, t1) of m deals created on `days` and run from creation."""
    created = np.clip(sample_creation_days(m, days, weight, rng), t0, None)
    deals = sample_deals(created, make_population(p), p, rng)
    q = sample_latent(m, rng)
    z, mult = deals["z_obs"] + p.sigma_q * q, deals["size_factor"] * np.exp(-p.speed_effect * q)
    zeros = np.zeros(m, dtype="int64")
    paths = simulate(zeros, zeros, created, z, mult, p, rng)
    amount = deals["amount"] * np.exp(final_log_amount_change(paths, np.full(m, -np.inf), p, rng))
    return np.where(paths.won & (paths.closed >= t0) & (paths.closed < t1), amount, 0.0)

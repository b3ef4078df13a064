"""The stage process: competing-risks semi-Markov spells, absorption probabilities,
quarter-end pulls and amount drift. The generator and the oracle both call this code,
so the dynamics are written once.

Times are float days since `params.start`. A path is one deal's (possibly partial)
history; a spell is one stay in one stage.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.synthetic.params import ADVANCE, LOST, N_STAGES, REGRESS, GeneratorParams


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def exit_probabilities(z: np.ndarray, stage: np.ndarray, regs: np.ndarray, p: GeneratorParams
                       ) -> np.ndarray:
    """(n, 3) prior probabilities of the spell's exit kind, columns [regress, advance, lost].

    P(regress) = regress_prob[s] if s >= 1 and regs < max_regressions else 0;
    P(advance) = (1 - P(regress)) * sigmoid(z + stage_offset[s]); P(lost) = the rest.
    """
    p_reg = np.asarray(p.regress_prob)[stage] * (regs < p.max_regressions) * (stage >= 1)
    p_adv = (1.0 - p_reg) * sigmoid(z + np.asarray(p.stage_offset)[stage])
    return np.column_stack([p_reg, p_adv, 1.0 - p_reg - p_adv])


def dwell_scale(stage: np.ndarray, kind: np.ndarray, multiplier: np.ndarray, p: GeneratorParams
                ) -> np.ndarray:
    """Gamma scale (days) of a spell: stage mean x deal multiplier x loss factor.

    The deal multiplier is size_factor * exp(-speed_effect * q) (truth column
    `dwell_multiplier`); the shape is `p.dwell_shape` for every spell.
    """
    if multiplier.ndim == 2:  # per stage (a regime change slowed some stages): the spell's own stage
        multiplier = np.take_along_axis(multiplier, stage[:, None], axis=1)[:, 0]
    loss = np.where(kind == LOST, p.loss_dwell_factor, 1.0)
    return np.asarray(p.stage_mean_days)[stage] / p.dwell_shape * multiplier * loss


def absorption_probability(z: np.ndarray, p: GeneratorParams) -> np.ndarray:
    """W[i, s, k] = P(eventually won | deal i enters stage s having regressed k times).

    Backward recursion, exact: W[s=N_STAGES] = 1 (won) and, for k from the cap down,
    W[s, k] = P_adv(s, k) W[s+1, k] + P_reg(s, k) W[s-1, k+1]; the regression cap makes
    the chain acyclic in (k, s), so no linear system is needed.
    """
    z = np.asarray(z, dtype="float64")
    n, kmax = len(z), p.max_regressions
    w = np.zeros((n, N_STAGES + 1, kmax + 1))
    w[:, N_STAGES, :] = 1.0
    for k in range(kmax, -1, -1):
        for s in range(N_STAGES - 1, -1, -1):
            probs = exit_probabilities(z, np.full(n, s), np.full(n, k), p)
            w[:, s, k] = probs[:, ADVANCE] * w[:, s + 1, k]
            if s >= 1 and k < kmax:
                w[:, s, k] += probs[:, REGRESS] * w[:, s - 1, k + 1]
    return w


@dataclass
class Spells:
    """Flat table of spells over all paths, in spell-number order."""

    path: np.ndarray
    stage: np.ndarray
    start: np.ndarray
    end: np.ndarray
    kind: np.ndarray


@dataclass
class Paths:
    """Simulated futures: the spells, and per path the outcome and close time (days)."""

    spells: Spells
    won: np.ndarray
    closed: np.ndarray


def simulate(stage: np.ndarray, regs: np.ndarray, entered: np.ndarray, z: np.ndarray,
             multiplier: np.ndarray, p: GeneratorParams, rng: np.random.Generator,
             first_kind: np.ndarray | None = None, first_end: np.ndarray | None = None) -> Paths:
    """Run every path's spells until won or lost; vectorised over paths, looping over
    the spell number (bounded: at most N_STAGES + 2 * max_regressions spells).

    `first_kind`/`first_end` fix the first spell (the oracle draws them from the
    posterior given the time already spent); otherwise it is drawn like any other.
    Won closes then get the quarter-end pull.
    """
    n = len(z)
    stage, regs, t = stage.astype("int64").copy(), regs.astype("int64").copy(), entered.astype("float64").copy()
    won, closed = np.zeros(n, dtype=bool), np.full(n, np.nan)
    active, parts, first = np.arange(n), [], True
    while active.size:
        s, k = stage[active], regs[active]
        if first and first_kind is not None:
            kind, end = first_kind.astype("int64"), first_end.astype("float64")
        else:
            probs = exit_probabilities(z[active], s, k, p)
            u = rng.random(active.size)
            kind = (u >= probs[:, REGRESS]).astype("int64") + (u >= probs[:, REGRESS] + probs[:, ADVANCE])
            end = t[active] + rng.gamma(p.dwell_shape, dwell_scale(s, kind, multiplier[active], p))
        first = False
        parts.append((active, s, t[active], end, kind))
        stage[active] = s + (kind == ADVANCE) - (kind == REGRESS)
        regs[active] = k + (kind == REGRESS)
        t[active] = end
        done = (kind == LOST) | ((kind == ADVANCE) & (s == N_STAGES - 1))
        won[active[done]] = kind[done] == ADVANCE
        closed[active[done]] = end[done]
        active = active[~done]
    if not parts:  # no paths at all
        empty = np.zeros(0, dtype="int64")
        return Paths(Spells(empty, empty, np.zeros(0), np.zeros(0), empty), won, closed)
    spells = Spells(*(np.concatenate([part[i] for part in parts]) for i in range(5)))
    last_start = _last_spell_start(spells, n)
    closed = quarter_pull(closed, won, last_start, p, rng)
    return Paths(spells=spells, won=won, closed=closed)


def _last_spell_start(spells: Spells, n: int) -> np.ndarray:
    out = np.full(n, -np.inf)
    np.maximum.at(out, spells.path, spells.start)
    return out


def quarter_starts(p: GeneratorParams, years_after: int = 12) -> np.ndarray:
    """Quarter starts (days since p.start), from a year before the window to well after."""
    start = pd.Timestamp(p.start)
    qs = pd.date_range(start - pd.DateOffset(years=1), start + pd.DateOffset(months=p.months, years=years_after),
                       freq="QS")
    return ((qs - start) / pd.Timedelta(days=1)).to_numpy(dtype="float64")


def quarter_pull(closed: np.ndarray, won: np.ndarray, last_start: np.ndarray, p: GeneratorParams,
                 rng: np.random.Generator) -> np.ndarray:
    """Quarter-end pressure: a won close at t in [Q, Q + W) moves, with probability
    quarter_pull_prob, to Q - (t - Q) * L / W (into the quarter's last L days), provided
    the final spell had started by then (the close stays inside its spell)."""
    qs = quarter_starts(p)
    u = rng.random(len(closed))
    q = qs[np.clip(np.searchsorted(qs, np.nan_to_num(closed, nan=qs[0]), side="right") - 1, 0, len(qs) - 1)]
    offset = closed - q
    pulled = q - offset * p.quarter_pull_days / p.quarter_pull_window_days
    pull = won & (offset < p.quarter_pull_window_days) & (u < p.quarter_pull_prob) & (pulled > last_start)
    return np.where(pull, pulled, closed)


def stage_entry_log_multiplier(stage_entered: np.ndarray, p: GeneratorParams, rng: np.random.Generator
                               ) -> np.ndarray:
    """Log change of the amount when a deal enters a stage (not at creation): noise, and
    a discount each time it enters negotiation."""
    noise = rng.normal(0.0, p.stage_amount_sigma, len(stage_entered))
    return noise + np.where(stage_entered == N_STAGES - 1, np.log(p.negotiation_discount), 0.0)


def sample_updates(spells: Spells, closed: np.ndarray, not_before: np.ndarray, p: GeneratorParams,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mid-spell amount revisions: a Poisson process at
    update_rate_per_day over [max(start, not_before), min(end, close)) of each spell.
    Returns (spell index, time, log multiplier)."""
    lo = np.maximum(spells.start, not_before[spells.path])
    hi = np.minimum(spells.end, closed[spells.path])
    span = np.clip(hi - lo, 0.0, None)
    count = rng.poisson(p.update_rate_per_day * span)
    idx = np.repeat(np.arange(len(span)), count)
    times = lo[idx] + rng.random(idx.size) * span[idx]
    return idx, times, rng.normal(0.0, p.update_amount_sigma, idx.size)


def final_log_amount_change(paths: Paths, not_before: np.ndarray, p: GeneratorParams,
                            rng: np.random.Generator) -> np.ndarray:
    """Per path: log(amount at close / amount at the path's start), summing the stage
    entries after each path's first spell and the revisions before the close."""
    sp = paths.spells
    n = len(paths.won)
    entered = np.ones(len(sp.path), dtype=bool)
    entered[: n] = False  # the first spell of each path (spell number 0 comes first) is not an entry
    entered &= sp.start <= paths.closed[sp.path]
    change = np.bincount(sp.path[entered], stage_entry_log_multiplier(sp.stage[entered], p, rng), minlength=n)
    idx, times, mult = sample_updates(sp, paths.closed, not_before, p, rng)
    return change + np.bincount(sp.path[idx], mult, minlength=n)

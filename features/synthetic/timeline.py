"""Stage-event rows of generated deals: one row per spell entry, plus same-stage rows for
amount revisions and expected-close-date pushes, each carrying the amount and expected
close date as they were at that moment."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.asof import ffill_index, group_starts, take
from features.synthetic.params import GeneratorParams
from features.synthetic.process import Paths, sample_updates, stage_entry_log_multiplier


@dataclass
class EventRows:
    """Flat, sorted by (path, time); censored at the close and at data_end."""

    path: np.ndarray
    stage: np.ndarray
    time: np.ndarray
    amount: np.ndarray
    expected_close: np.ndarray  # NaN until the deal first reaches qualified


def build_events(paths: Paths, amount0: np.ndarray, size_factor: np.ndarray, data_end: float,
                 p: GeneratorParams, rng: np.random.Generator) -> EventRows:
    """Spell entries + revisions + pushes, with amounts as a multiplicative walk from the
    creation amount and the rep's expected close date carried forward."""
    sp = paths.spells
    n = len(amount0)
    entry_mult = stage_entry_log_multiplier(sp.stage, p, rng)
    entry_mult[:n] = 0.0  # spell 0 of every path is the creation row, at the created amount
    upd_idx, upd_time, upd_mult = sample_updates(sp, paths.closed, np.full(n, -np.inf), p, rng)
    tq = _first_qualified(paths)
    estimate = tq + _remaining_estimate(size_factor, p, rng)
    first_ecd = np.where((sp.stage == 1) & (sp.start == tq[sp.path]), estimate[sp.path], np.nan)
    push_path, push_time, push_ecd = _pushes(tq, estimate, np.minimum(paths.closed, data_end), p, rng)
    path = np.concatenate([sp.path, sp.path[upd_idx], push_path])
    time = np.concatenate([sp.start, upd_time, push_time])
    stage = np.concatenate([sp.stage, np.full(upd_idx.size + push_path.size, -1)])
    mult = np.concatenate([entry_mult, upd_mult, np.zeros(push_path.size)])
    ecd_set = np.concatenate([first_ecd, np.full(upd_idx.size, np.nan), push_ecd])
    order = np.lexsort((np.concatenate([np.zeros(sp.path.size), np.ones(upd_idx.size + push_path.size)]),
                        time, path))
    path, time, stage, mult, ecd_set = (a[order] for a in (path, time, stage, mult, ecd_set))
    start = group_starts(path)
    stage = stage[ffill_index(stage >= 0, start)]
    ecd = take(ecd_set, ffill_index(~np.isnan(ecd_set), start))
    cs = np.cumsum(mult)
    amount = np.round(amount0[path] * np.exp(cs - cs[start]))
    keep = (time <= paths.closed[path]) & (time <= data_end)
    return EventRows(path[keep], stage[keep], time[keep], amount[keep], ecd[keep])


def _remaining_estimate(size_factor: np.ndarray, p: GeneratorParams, rng: np.random.Generator) -> np.ndarray:
    """The rep's optimistic guess of the days left from qualified to close: the stage means
    (scaled by deal size, not by the unseen quality) x optimism x log-normal noise."""
    mean_rest = np.sum(p.stage_mean_days[1:]) * size_factor
    return mean_rest * p.close_estimate_optimism * np.exp(rng.normal(0.0, p.close_estimate_sigma, len(size_factor)))


def _first_qualified(paths: Paths) -> np.ndarray:
    sp = paths.spells
    tq = np.full(len(paths.won), np.inf)
    q = sp.stage == 1
    np.minimum.at(tq, sp.path[q], sp.start[q])
    return tq


def _pushes(tq: np.ndarray, estimate: np.ndarray, stop: np.ndarray, p: GeneratorParams,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """When the expected close date passes with the deal still open, the rep pushes it a
    few days later to a new date; repeated until the deal closes or the data ends (`stop`).
    Loops over push rounds (vectorised over deals)."""
    ecd = estimate.copy()
    active = np.flatnonzero(np.isfinite(tq) & (ecd < stop))
    out_path, out_time, out_ecd = [], [], []
    lo, hi = p.push_delay_days
    while active.size:
        when = ecd[active] + lo + (hi - lo) * rng.random(active.size)
        active, when = active[when < stop[active]], when[when < stop[active]]
        new = when + p.push_extension_days * np.exp(rng.normal(0.0, 0.5, active.size))
        out_path.append(active), out_time.append(when), out_ecd.append(new)
        ecd[active] = new
        active = active[new < stop[active]]
    cat = lambda parts, dtype: np.concatenate(parts) if parts else np.zeros(0, dtype)  # noqa: E731
    return cat(out_path, "int64"), cat(out_time, "float64"), cat(out_ecd, "float64")

"""Activities of generated deals (emails, calls, meetings, demos): a Poisson process per
spell whose rate rises with the stage and the latent quality, and collapses in the last
part of a spell that ends in a loss (reps stop working a deal before it is marked lost)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.synthetic.params import ACTIVITY_TYPES, LOST, GeneratorParams
from features.synthetic.process import Paths


@dataclass
class ActivityRows:
    path: np.ndarray
    time: np.ndarray
    type: np.ndarray  # index into ACTIVITY_TYPES


def build_activities(paths: Paths, q: np.ndarray, data_end: float, p: GeneratorParams,
                     rng: np.random.Generator) -> ActivityRows:
    """Rate per spell = activity_rate_per_day[stage] * exp(activity_quality_effect * q);
    in a losing spell the last min(loss_fade_days, loss_fade_share * length) days run at
    loss_activity_factor times that rate. Weekend activities are thinned; nothing is kept
    after the close or data_end."""
    sp = paths.spells
    rate = np.asarray(p.activity_rate_per_day)[sp.stage] * np.exp(p.activity_quality_effect * q[sp.path])
    length = sp.end - sp.start
    fade = np.where(sp.kind == LOST, np.minimum(p.loss_fade_days, p.loss_fade_share * length), 0.0)
    seg_start = np.concatenate([sp.start, sp.end - fade])
    seg_len = np.concatenate([length - fade, fade])
    seg_rate = np.concatenate([rate, rate * p.loss_activity_factor])
    count = rng.poisson(seg_rate * seg_len)
    seg = np.repeat(np.arange(seg_len.size), count)
    spell = seg % sp.path.size
    time = seg_start[seg] + rng.random(seg.size) * seg_len[seg]
    path = sp.path[spell]
    kind = _draw_types(sp.stage[spell], p, rng)
    keep = (time <= paths.closed[path]) & (time <= data_end) & _keep_weekends(time, p, rng)
    order = np.lexsort((time[keep], path[keep]))
    return ActivityRows(path[keep][order], time[keep][order], kind[keep][order])


def _draw_types(stage: np.ndarray, p: GeneratorParams, rng: np.random.Generator) -> np.ndarray:
    u = rng.random(stage.size)
    kind = np.zeros(stage.size, dtype="int8")
    for s, mix in enumerate(p.activity_type_mix):  # a loop over 4 stages, not over rows
        at = stage == s
        kind[at] = np.minimum(np.searchsorted(np.cumsum(mix), u[at], side="right"), len(ACTIVITY_TYPES) - 1)
    return kind


def _keep_weekends(time: np.ndarray, p: GeneratorParams, rng: np.random.Generator) -> np.ndarray:
    start_weekday = pd.Timestamp(p.start).dayofweek
    weekday = (start_weekday + np.floor(time).astype("int64")) % 7
    return (weekday < 5) | (rng.random(time.size) < p.weekend_activity_keep)

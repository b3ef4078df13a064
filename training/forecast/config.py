"""The forecast's settings (one place, read by calibration, simulation and the risk list)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ForecastConfig:
    n_sims: int = 2000
    seed: int = 0
    shock: float | None = None  # relative sd of the common shock; None: estimate from history
    history_periods: int = 12  # past periods used to estimate the shock
    default_shock: float = 0.15  # used when fewer than `min_history_periods` past periods exist
    min_history_periods: int = 3
    correct_bias: bool = True  # scale each part by its realised / predicted ratio over past periods
    bias_clip: tuple = (0.5, 2.0)
    max_shock: float = 0.5  # cap on the estimated relative sd (a few wild past periods must not explode the range)
    low_probability: float = 0.2  # risk list: P(won) below this
    quiet_days: int = 14  # risk list: no activity for more than this
    block_paths: int = 2_000_000  # deals x simulations drawn at once (memory bound)

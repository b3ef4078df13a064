"""What a forecast reuses between requests for the same data, date and calibration.

`prepare()` does the slow part of `core.forecast` once: the data cut at the as-of date,
the open deals scored, the new-deal model fitted, the calibration from past periods
(bias factors and common shock), the realised history and the deal state the risk list
reads. What remains per request (the periods' P(won in period), the Monte Carlo, the
tables) takes a fraction of it. `cache.PreparedCache` holds a few for a long-running
service.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Callable

import pandas as pd

from features.errors import LeadscoreError
from features.schema import CanonicalData
from features.timetravel import truncate_at
from training.forecast.bookings import realised_history
from training.forecast.calibration import estimate_shock
from training.forecast.config import ForecastConfig
from training.forecast.newdeals import NewDealModel
from training.forecast.periods import check_as_of, make_periods
from training.forecast.risk import RiskContext, risk_context
from training.forecast.timing import TimingCorrection
from training.forecast.valuation import OpenPipeline, score_open_deals

HISTORY_PERIODS_SHOWN = 6
MAX_GROUPS = 500
PREPARE_STEPS = 4  # the `step` calls of `prepare`
# the settings `prepare` reads (the rest, n_sims and seed included, only change the simulation)
CALIBRATION_FIELDS = ("shock", "history_periods", "default_shock", "min_history_periods", "correct_bias",
                      "bias_clip", "max_shock")


@dataclass(frozen=True)
class Prepared:
    """The reusable state of a forecast from `as_of` at frequency `freq`, split by `group_by`."""

    as_of: pd.Timestamp
    freq: str
    group_by: str | None
    known: CanonicalData = field(repr=False)  # the tables as known at as_of
    scored: OpenPipeline = field(repr=False)  # open deals scored (no groups, no periods)
    new_deals: NewDealModel = field(repr=False)  # fitted, not bias-corrected
    shock: dict = field(repr=False)  # `calibration.estimate_shock`
    history: pd.DataFrame = field(repr=False)  # realised bookings of past periods (the chart)

    @cached_property
    def risk(self) -> RiskContext:
        """Deal state and stage dwell limits at as_of (the risk list's; a backtest never reads them)."""
        return risk_context(self.known, self.as_of)

    def check(self, as_of: pd.Timestamp, freq: str, group_by: str | None) -> None:
        """Raise unless this state was prepared for (as_of, freq, group_by)."""
        if (self.as_of, self.freq, self.group_by) != (as_of, freq, group_by):
            raise ValueError(f"prepared for {(self.as_of, self.freq, self.group_by)}, "
                             f"used for {(as_of, freq, group_by)}")


def prepare(predictor, data: CanonicalData, as_of, freq: str = "month", group_by: str | None = None,
            config: ForecastConfig | None = None, known: CanonicalData | None = None,
            step: Callable[[str], None] = lambda _s: None) -> Prepared:
    """The slow, reusable part of a forecast from `as_of` (checked: a clear error when outside
    the data). `known`: `truncate_at(data, as_of)` when the caller has it already; `step(name)`
    is called at each stage (progress bars)."""
    config = config or ForecastConfig()
    as_of = check_as_of(data, as_of)
    make_periods(as_of, 1, freq)  # a bad frequency or group is an error here, before any scoring
    check_group(data, group_by)
    step(f"cutting the data at {as_of.date()}")
    known = truncate_at(data, as_of) if known is None else known
    step("scoring the open pipeline")
    scored = score_open_deals(predictor, known, as_of)
    step("fitting the new-deal model")
    fitted = NewDealModel(group_column=group_by).fit(known, as_of, rule=scored.rule)
    step("calibrating on past periods")
    shock = estimate_shock(predictor, known, as_of, freq, config, scored.rule, seasonal=fitted.season_ is not None)
    scored = replace(scored, deals=TimingCorrection(**shock["timing"]).apply(scored.deals))  # as the past periods were valued
    return Prepared(as_of=as_of, freq=freq, group_by=group_by, known=known, scored=scored, new_deals=fitted,
                    shock=shock, history=realised_history(known, as_of, freq, HISTORY_PERIODS_SHOWN, scored.rule))


def check_group(data: CanonicalData, group_by: str | None) -> None:
    """A clear error unless `group_by` is a deals column with a manageable number of values."""
    if group_by is None:
        return
    if group_by not in data.deals:
        cols = [c for c in ("owner", "team", "region", "product", "segment", "source") if c in data.deals]
        raise LeadscoreError(f"--group-by '{group_by}' is not a column of deals: use one of {cols}")
    n = data.deals[group_by].nunique()
    if n > MAX_GROUPS:
        raise LeadscoreError(f"--group-by '{group_by}' has {n} values (at most {MAX_GROUPS}): group by a "
                             f"coarser column such as team, region or segment")

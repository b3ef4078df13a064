"""The forecast and what managers act on beside it: `forecast()`, then the risk list and
(with targets) the target report, each a step with plain inputs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd

from features.schema import CanonicalData
from training.forecast.config import ForecastConfig
from training.forecast.core import FORECAST_STEPS, Forecast, forecast
from training.forecast.periods import check_as_of, make_periods
from training.forecast.prepared import Prepared, check_group, prepare
from training.forecast.risk import risk_list
from training.forecast.targets import TargetReport, checked_targets, target_report

OUTLOOK_STEPS = FORECAST_STEPS + 1


@dataclass(frozen=True)
class Outlook:
    forecast: Forecast
    risk: pd.DataFrame  # deals at risk in the first period, with reasons
    targets: TargetReport | None = None


def outlook(predictor, data: CanonicalData, as_of, periods: int = 3, freq: str = "month",
            group_by: str | None = None, targets: pd.DataFrame | None = None,
            config: ForecastConfig | None = None, prepared: Prepared | None = None,
            step: Callable[[str], None] = lambda _s: None) -> Outlook:
    """The forecast from `as_of`, its risk list and, given `targets` (period[, group], target), the target report.
    A bad targets frame is an error raised before anything is simulated. `prepared`, `step`: see `core.forecast`
    (`OUTLOOK_STEPS` calls without `prepared`)."""
    config = config or ForecastConfig()
    per = make_periods(check_as_of(data, as_of), periods, freq)
    check_group(data, group_by)
    if targets is not None:
        targets = checked_targets(targets, per, freq, group_by, data.deals[group_by] if group_by else None)
    prepared = prepared or prepare(predictor, data, as_of, freq, group_by, config, step=step)
    fc = forecast(predictor, data, as_of, periods, freq, group_by=group_by, config=config, prepared=prepared,
                  step=step)
    step("listing the deals at risk")
    risk = risk_list(fc.deals, fc.known, fc.as_of, fc.periods.iloc[0], config.low_probability, config.quiet_days,
                     prepared.risk)
    report = None if targets is None else target_report(targets, fc)
    return Outlook(forecast=fc, risk=risk, targets=report)

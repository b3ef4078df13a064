"""Revenue forecast with ranges: open pipeline + deals not created yet, by period.

For each period (the first is the remainder of the period containing the as-of date):
- open pipeline (`valuation`): every deal open at T contributes amount x P(won with
  close in the period) from the predictor;
- new deals (`newdeals.NewDealModel`): creation rate x cohort win curve x won-amount
  pool, estimated from data before T only;
- calibration (`calibration`): bias factors and a common shock from past periods;
- ranges (`simulation`): a seeded Monte Carlo;
- landing: what each period lands at, closed-won so far in it (the bookings rule) + the
  simulated rest, so a period in progress is comparable with whole past periods.
Every part values a win with one `bookings.BookingRule`. The risk list and the target
report are steps after `forecast()` (`outlook.outlook` runs all three).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

from features.deadline import checkpoint
from features.schema import CanonicalData
from training.forecast.bookings import BookingRule
from training.forecast.calibration import period_factors
from training.forecast.config import ForecastConfig
from training.forecast.newdeals import ALL, NewDealModel
from training.forecast.periods import FREQS, check_as_of, make_periods
from training.forecast.prepared import PREPARE_STEPS, Prepared, check_group, prepare
from training.forecast.simulation import Simulation, simulate, summarise
from training.forecast.valuation import OpenPipeline, in_periods, stale_pipeline, with_expectations

FORECAST_STEPS = PREPARE_STEPS + 1  # the `step` calls of `forecast` (without `prepared`)


@dataclass
class Forecast:
    as_of: pd.Timestamp
    freq: str
    periods: pd.DataFrame  # period, start, end, partial
    table: pd.DataFrame  # per (period, group): expected, open_pipeline, new_deals, p10/50/90, closed_so_far, landing_*
    deals: pd.DataFrame  # open deals: amount, probability, bias-corrected expected value per period (exp_k)
    shock: dict
    new_deals: NewDealModel  # fitted, new-win values bias-corrected
    booking_rule: BookingRule
    known: CanonicalData = field(repr=False)  # the tables as known at as_of: the steps after the forecast read them
    group_by: str | None = None
    history: pd.DataFrame | None = None  # realised bookings of past periods (for the chart)
    sims: Simulation | None = field(default=None, repr=False)  # the draws behind every range (and the targets)
    notes: list[str] = field(default_factory=list)
    stale: dict = field(default_factory=dict)  # valuation.stale_pipeline: the stale deals' own line

    @property
    def value_unit(self) -> str:
        """"amount" or "won deals"."""
        return self.booking_rule.value_unit

    def totals(self) -> pd.DataFrame:
        return self.table.loc[self.table["group"] == ALL].reset_index(drop=True)


def forecast(predictor, data: CanonicalData, as_of, periods: int = 3, freq: str = "month",
             group_by: str | None = None, config: ForecastConfig | None = None,
             prepared: Prepared | None = None, step: Callable[[str], None] = lambda _s: None) -> Forecast:
    """Forecast bookings for `periods` periods from `as_of` with what was known then.
    `prepared`: `prepared.prepare(...)` for the same as_of, freq and group_by (e.g. from a
    `PreparedCache`), else it is built here; `step(name)`: called at each stage (progress bars),
    `FORECAST_STEPS` times."""
    config = config or ForecastConfig()
    as_of = check_as_of(data, as_of)
    per = make_periods(as_of, periods, freq)
    check_group(data, group_by)
    if prepared is None:
        prepared = prepare(predictor, data, as_of, freq, group_by, config, step=step)
    prepared.check(as_of, freq, group_by)
    known, shock = prepared.known, dict(prepared.shock)
    pipe = in_periods(prepared.scored, known, as_of, per, group_by)
    checkpoint()  # between the steps: a /forecast past its timeout stops (features.deadline)
    factors = period_factors(shock, per, freq)
    checkpoint()
    deals = with_expectations(pipe.deals, factors)
    new_deals = prepared.new_deals.scaled(shock["new_factor"])
    closed = closed_so_far(known, as_of, per, freq, group_by, pipe.rule)
    groups = sorted(set(deals["group"]) | set(new_deals.pool_["group"]) | set(closed.index))
    step(f"simulating {config.n_sims:,} outcomes")
    sims = simulate(deals, new_deals, per, factors, config, shock["relative_sd"], groups, closed)
    return Forecast(as_of=as_of, freq=freq, periods=per, table=summarise(deals, new_deals, per, sims, group_by),
                    deals=deals, shock=shock, new_deals=new_deals, booking_rule=pipe.rule, known=known,
                    group_by=group_by, sims=sims, history=prepared.history.copy(),
                    notes=_notes(per, predictor, as_of, pipe), stale=stale_pipeline(deals, len(per)))


def closed_so_far(known: CanonicalData, as_of: pd.Timestamp, per: pd.DataFrame, freq: str,
                  group_by: str | None, rule: BookingRule) -> pd.DataFrame:
    """Booked value (the bookings rule) of the deals won in each period up to `as_of`,
    one row per group and one column per period: non-zero only in a period in progress."""
    deals = known.deals
    start = pd.Period(per["period"].iloc[0], FREQS[freq]).start_time
    won = ((deals["outcome"] == "won") & (deals["closed_at"] >= start) & (deals["closed_at"] <= as_of)).fillna(False)
    won = won.to_numpy(dtype=bool)
    group = deals.loc[won, group_by].astype("string").fillna("(none)").astype(str) if group_by else \
        pd.Series(ALL, index=deals.index[won])
    amount = deals.loc[won, "amount"] if "amount" in deals else pd.Series(float("nan"), index=group.index)
    first = rule.booked(amount).groupby(group).sum()
    out = pd.DataFrame(0.0, index=first.index, columns=range(len(per)))
    out[0] = first
    return out


def _notes(per: pd.DataFrame, predictor, as_of: pd.Timestamp, pipe: OpenPipeline) -> list[str]:
    notes = []
    if per["partial"].iloc[0]:
        notes.append(f"the first period {per['period'].iloc[0]} is the remainder of the current period: from "
                     f"{as_of} to {per['end'].iloc[0]}; its landing (landing_p10/p50/p90) adds the wins closed "
                     f"earlier in it (closed_so_far)")
    if pipe.rule.counts_deals:
        notes.append("no deal amounts in the data: the forecast counts won deals, not money")
    elif pipe.amount_imputed:
        notes.append(f"{pipe.amount_imputed} open deals had no amount known at the as-of date: "
                     f"valued at the median won amount")
    trained_end = (getattr(predictor, "info", {}) or {}).get("data_end")
    if trained_end and pd.Timestamp(trained_end) > as_of:
        notes.append(f"the model was trained on data up to {trained_end}, after the as-of date: its probabilities "
                     f"at this date are in-sample (use `leadscore backtest` for an honest accuracy record)")
    return notes

"""Response shapes of `/forecast` and `/pipeline`, the error body and the data an answer
used (pydantic, for the OpenAPI spec and the tests).

`ForecastReport` is the one forecast JSON: `training.forecast.report.forecast_dict`, which
`leadscore forecast --out FILE.json`, MLflow's `forecast.json` and `/forecast` all write.
Its fields are closed (`extra="forbid"`): a key added to `forecast_dict` fails
tests/serving/test_report_schemas.py until it is documented here. Over 300 lines because
every JSON answer besides `/score`'s is documented here, one home for those shapes.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field

CLOSED = ConfigDict(extra="forbid")


class FieldError(BaseModel):
    field: str = Field(description="Path of what the client sent, e.g. `deals[3].stage_history[0].entered_at`, "
                                   "`targets[1].target` or `as_of`; `body` for the body as a whole.")
    message: str = Field(description="What is wrong and, where there is one, the close match or the valid values.")


class ErrorBody(BaseModel):
    """Every 4xx and 503 of the service has this shape."""

    error: str = Field(description="One line for a person.")
    errors: list[FieldError] = Field(description="One entry per bad field (empty when the error is not about a "
                                                 "field, e.g. 401, 413, 503).")


class SourceRefreshed(BaseModel):
    """The source re-read into LEADSCORE_DATA every `every_s` seconds (serving/source_refresh.py)."""

    model_config = CLOSED
    mapping: str = Field(description="The mapping file (LEADSCORE_SOURCE_MAPPING).")
    every_s: float = Field(description="Seconds between re-reads (LEADSCORE_SOURCE_REFRESH_S).")
    ok: Optional[bool] = Field(description="Whether the last re-read worked (null before the first one ended).")
    last_attempt_at: Optional[dt.datetime]
    last_success_at: Optional[dt.datetime]
    error: Optional[str] = Field(description="Why the last re-read failed: the data served is the last good one.")
    unchanged_since: Optional[dt.datetime] = Field(description="After a failed re-read: the time of the data still "
                                                               "served (its last good re-read).")
    rows_read: Optional[int] = Field(description="Rows the last good re-read read from the source (all tables).")
    rejected_rows: Optional[int] = Field(description="Of those, rejected (in the folder's rejects.csv, by reason).")


class DataUsed(BaseModel):
    """Which data the answer was computed from (`LEADSCORE_DATA`, re-read when it changes)."""

    model_config = CLOSED
    source: str = Field(description="The LEADSCORE_DATA folder.")
    data_end: Optional[dt.datetime] = Field(description="The dataset's data end (its last recorded event or export "
                                                        "time); null for a static export without dates.")
    data_fingerprint: str = Field(description="sha256 of the canonical tables (as training records it: "
                                               "`training.tracking.data_fingerprint`), for the track record.")
    loaded_at: dt.datetime = Field(description="When the service read this data (UTC).")
    refresh: Optional[SourceRefreshed] = Field(None, description="With LEADSCORE_SOURCE_MAPPING: how the source "
                                                                   "behind the folder is re-read (null without).")


# ---- the forecast ------------------------------------------------------------------------

class Headline(BaseModel):
    model_config = CLOSED
    period: str = Field(description="The first forecast period (the one in progress when `partial`).")
    partial: bool = Field(description="The as-of date falls inside the period.")
    closed_so_far: float = Field(description="Closed-won in the period up to the as-of date.")
    expected: float = Field(description="Expected bookings of the rest of the period.")
    landing_expected: float = Field(description="closed_so_far + expected.")
    landing_p10: float
    landing_p50: float = Field(description="Where the period lands: median of the simulated landings.")
    landing_p90: float
    target: Optional[float] = Field(None, description="The company target of the period, when given.")
    p_hit_target: Optional[float] = Field(None, description="Share of simulations whose landing >= target.")


class PeriodSpan(BaseModel):
    model_config = CLOSED
    period: str = Field(description="Period label: 2025-01 (month) or 2025Q1 (quarter).")
    start: dt.datetime = Field(description="Start of what is forecast (the as-of date for a period in progress).")
    end: dt.datetime = Field(description="End of the period (exclusive).")
    partial: bool


class ForecastRow(BaseModel):
    """One period and group (`(all)` is the company total; the groups add up to it)."""

    model_config = CLOSED
    period: str
    start: dt.datetime
    end: dt.datetime
    partial: bool
    group: str = Field(description="A value of `group_by`, or `(all)`.")
    expected: float = Field(description="open_pipeline + new_deals (analytic expectation).")
    open_pipeline: float = Field(description="Expected bookings from deals open at the as-of date.")
    new_deals: float = Field(description="Expected bookings from deals created and won inside the period.")
    p10: float
    p50: float
    p90: float
    open_pipeline_p10: float
    open_pipeline_p90: float
    closed_so_far: float
    landing_expected: float
    landing_p10: float
    landing_p50: float
    landing_p90: float


class ShockHistoryRow(BaseModel):
    model_config = CLOSED
    start: str
    predicted: float
    variance: float
    actual: float
    open_predicted: float
    open_variance: float
    open_actual: float
    new_predicted: float
    new_variance: float
    new_actual: float
    new_seasonal: bool = Field(description="the new-deal model of that period knew the calendar (a year of history)")
    position: int
    corrected: float


class Timing(BaseModel):
    model_config = CLOSED
    shift: float = Field(description="Added to the centre of log1p(days to a won close).")
    scale: float = Field(description="Multiplies the spread of log1p(days to a won close).")
    won_rows: int = Field(description="Past (deal, period start) rows won by the as-of date that informed it.")
    month_of_quarter: list[float] = Field(description=(
        "Past monthly periods' bookings over their expectation (amount known at each period's start x "
        "P(won in the period)), per month 1, 2, 3 of a quarter, relative to all months: the pile-up before "
        "quarter ends; multiplies the overall open-pipeline factor of a monthly period."))


class Ranges(BaseModel):
    """How the P10-P90 ranges were made: the common shock and the bias factors, estimated
    from how past forecasts compared with what was booked."""

    model_config = CLOSED
    method: str
    relative_sd: float = Field(description="Size of the common shock, relative to the forecast.")
    periods_used: int
    open_factor: float
    open_factors: dict[int, float] = Field(description="Open-pipeline bias factor per position in the quarter.")
    new_factor: float
    out_of_sample_from: Optional[str] = Field(None, description=(
        "Only past periods starting on or after this date calibrate: no outcome from then on taught the "
        "model (null: every past period is used, because the model has no record of its time folds or fewer "
        "than 3 past periods are out of sample; the note says which)."))
    in_sample_periods_left_out: int = Field(0, description="Past periods left out because the model was trained on them.")
    timing: Optional[Timing] = Field(None, description=(
        "The time-to-close correction learned from the deals open at those past periods' starts and won since "
        "(training/forecast/timing.py); it values the open pipeline of the forecast and of the past periods."))
    note: Optional[str] = None
    history: Optional[list[ShockHistoryRow]] = None


class Segment(BaseModel):
    model_config = CLOSED
    created_per_day: float
    won_within_90d: float
    mean_won_value: float


class SeasonalNewDeals(BaseModel):
    model_config = CLOSED
    year_over_year_growth: float
    note: str


class NewDealModel(BaseModel):
    model_config = CLOSED
    segments: dict[str, Segment]
    trend_per_window: float
    rate_window_days: float
    cohort_observed_up_to_days: int
    pool_size: int
    seasonal: Optional[SeasonalNewDeals] = None


class RiskRow(BaseModel):
    model_config = CLOSED
    deal_id: str
    group: str
    stage: Optional[str]
    amount: Optional[float]
    close_probability: float
    expected_in_period: float
    reasons: str = Field(description="Why the deal is at risk, in words.")


class ActualRow(BaseModel):
    model_config = CLOSED
    period: str
    actual: float = Field(description="Booked in the period.")
    so_far: bool = Field(description="The period was still running at the as-of date.")


class TargetRow(BaseModel):
    model_config = CLOSED
    period: str
    group: str
    target: float
    closed_won_so_far: float
    expected_landing: float
    landing_p10: float
    landing_p50: float
    landing_p90: float
    p_hit_target: float
    gap_to_target: float
    remaining_gap: float
    target_met: bool
    open_pipeline_due: float
    weighted_pipeline_due: float
    deals_due: int
    pipeline_coverage: Optional[float] = Field(description="See `target_definitions.pipeline_coverage`; null when "
                                                           "the target is already met.")
    expected_from_open_pipeline: float
    leads_needed: Optional[int]


class TargetDefinitions(BaseModel):
    model_config = CLOSED
    landing: str
    p_hit_target: str
    gap_to_target: str
    pipeline_coverage: str
    leads_needed: str
    value_per_new_lead: float


class StalePipeline(BaseModel):
    """Open deals past the give-up age (`features.staleness`): the forecast's own line.
    They are inside the totals (valued at the served, low, probability)."""

    model_config = CLOSED
    stale_open_count: int
    stale_open_value: float
    open_count: int
    open_value: float
    stale_expected_bookings: float = Field(description="Expected bookings from stale deals over all periods.")
    stale_expected_by_period: list[float] = Field(description="The same per forecast period, in order.")
    definition: str


class ForecastReport(BaseModel):
    """The forecast JSON (`forecast_dict`): the same in the CLI, MLflow and `/forecast`."""

    model_config = CLOSED
    as_of: dt.datetime
    freq: str = Field(description="month or quarter.")
    value_unit: str = Field(description="What the numbers count: amount, or won deals when the data has no amounts.")
    group_by: Optional[str]
    headline: Headline
    notes: list[str]
    periods: list[PeriodSpan]
    forecast: list[ForecastRow]
    parts: str = Field(description="What each column means.")
    ranges: Ranges
    new_deal_model: NewDealModel
    stale_pipeline: StalePipeline
    risk: list[RiskRow] = Field(description="Deals due in the first period that are at risk, largest first.")
    history: Optional[list[ActualRow]] = Field(description="Bookings of the periods before, for the chart.")
    targets: Optional[list[TargetRow]] = Field(description="One row per target (null without targets).")
    target_definitions: Optional[TargetDefinitions] = None


class ForecastResponse(ForecastReport):
    """`/forecast`: the forecast JSON plus the model version and the data it used."""

    model_version: int = Field(description="Registered model version that made the forecast.")
    data: DataUsed


# ---- pipeline analytics -------------------------------------------------------------------

Section = dict[str, Any]


class PipelineMetrics(BaseModel):
    """The pipeline metrics of a group of deals (or of all of them)."""

    funnel: Section = Field(description="Deals reaching each stage and conversion from stage to stage, win rate.")
    time_in_stage: list[Section] = Field(description="Days in each stage: median and P90 of completed spells.")
    sales_cycle: Section
    deal_size: Section
    bottleneck: Section = Field(description="The stage with the worst conversion or slowest dwell against history.")
    velocity: Section = Field(description="opportunities x win rate x average deal size / cycle length, and trend.")
    changes: Section = Field(description="Pipeline-change waterfall over the window: new, won, lost, amount changes.")
    stalled: Section = Field(description="Deals beyond the stage's historical P90 dwell or without recent activity.")
    cohorts: list[Section] = Field(description="Deals by creation month and what became of them.")
    coverage: Section = Field(description="Open pipeline against the target.")
    stale: Optional[Section] = Field(None, description="Stale open deals (count, value, share, the rule, the "
                                                       "largest with their reason); the other sections include them.")


class PipelineGroup(PipelineMetrics):
    group: str


class PipelineResponse(BaseModel):
    """`/pipeline`: the JSON of `leadscore pipeline` plus the data it used."""

    as_of: dt.datetime
    dataset: str
    group_by: Optional[str]
    static: bool = Field(description="The data has no stage history (static leads).")
    stages: list[str]
    parameters: Section
    activities_available: bool
    stage_history_available: bool = Field(description="The CRM's own stage history is in the data.")
    stage_history: Optional[str] = Field(None, description="'recorded' (the CRM's stage history) or 'snapshots' "
                                                           "(current-state exports: a stage is known from the export "
                                                           "that showed it; time in stage and the stage of closed "
                                                           "deals never shown past creation are unknown).")
    definitions: dict[str, str] = Field(description="How each number is computed.")
    total: PipelineMetrics
    groups: Optional[list[PipelineGroup]] = Field(None, description="Per value of `group_by`.")
    data: DataUsed


# ---- monitoring -----------------------------------------------------------------------------

class Verdict(BaseModel):
    level: str = Field(description="ok, warn or alert.")
    line: str = Field(description="The verdict in one line.")
    exit_status: int = Field(description="What `leadscore monitor` exits with: 0 ok, 1 warn or alert.")
    findings: list[Section] = Field(description="Each finding with its level.")


class MonitorResponse(BaseModel):
    """`/monitor`: the JSON of `leadscore monitor` (training/monitoring/monitor.py::monitor_report)."""

    model_name: str
    data_end: str
    config: Section = Field(description="The thresholds and windows used.")
    scores: Section = Field(description="How many scores are logged, closed since, open.")
    performance: dict[str, Section] = Field(description="Per model version: realised reliability, ECE, Brier, AUC "
                                                        "(scores at least maturity_days old) beside the test fold's "
                                                        "and the calibrated expectation; by segment and score decile.")
    drift: Section = Field(description="PSI per feature and of the score, last window_days and per week, against "
                                       "the training reference of the latest version.")
    verdict: Verdict


class ScoreLogStatus(BaseModel):
    written: int
    failed: int = Field(description="Rows lost to store outages (the requests were answered).")
    dropped: int = Field(description="Rows dropped because the log's queue was full.")
    outages: int
    pending: int
    store_down: bool


class StatusResponse(BaseModel):
    """`/status`: the served version and the score log's counters."""

    model_version: int
    score_log: ScoreLogStatus

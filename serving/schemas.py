"""Request and response shapes of the HTTP API (pydantic), documented field by field so
the OpenAPI page explains itself.

The checks here are the ones that need no model: types, required fields, finite numbers,
non-negative amounts, ordered stage history, unique deal ids, a non-empty batch. The
checks that need the model (known stages, dates against `as_of`) run on the request path
(`training.request`), which repeats those the scoring code relies on.

The deals of a `/score` request are TypedDicts, not models: pydantic validates them into
the plain dicts the scoring code reads (about half the time of building and dumping a model
per deal, stage change and activity for a 1,000-deal request).

Over 300 lines: the request models, their cross-field checks and the fast response writer
that must render exactly as `ScoreResponse` belong together; the `/forecast` and `/pipeline`
answers are in serving/report_schemas.py.
"""
# no `from __future__ import annotations`: TypedDict needs NotRequired unquoted to fill
# `__optional_keys__`, which the None-dropping below reads
import datetime as dt
from itertools import chain, islice, repeat
from operator import itemgetter, le
from typing import Annotated, Any, Literal, Optional

import orjson
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, field_validator
from pydantic_core import core_schema
from typing_extensions import NotRequired, TypedDict

from serving.times import UTC, UtcTime, as_utc

Timestamp = dt.datetime  # ISO 8601; a timezone offset is kept (compared as UTC)

# inf/NaN are not numbers a CRM can mean; inputs stay out of error texts (BentoML logs them)
STRICT = ConfigDict(allow_inf_nan=False, str_strip_whitespace=True, hide_input_in_errors=True)


class _Strict(BaseModel):
    """A request body: an unknown top-level field is a 422 at its own path (`extra_forbidden`),
    never silently ignored; `serving.errors.pydantic_errors` names the close match (`asof` ->
    "did you mean 'as_of'?"). Not a model validator: one that sees the raw input makes pydantic
    build the whole body as Python objects before validating it (~1.7x the time for 1,000 deals)."""

    model_config = ConfigDict(STRICT, extra="forbid")


class StageEntry(TypedDict):
    """One stage change (or change of the deal's fields) in the deal's history."""

    __pydantic_config__ = STRICT
    stage: Annotated[str, Field(min_length=1, description="Stage entered (one of the model's stages).")]
    entered_at: Annotated[Timestamp, Field(description="When the deal entered this stage (or when its fields "
                                                       "changed).")]
    amount: NotRequired[Annotated[Optional[float], Field(ge=0, description="Deal amount as it was at that moment.")]]
    expected_close_date: NotRequired[Annotated[Optional[Timestamp],
                                               Field(description="Expected close date as it was then.")]]


class Activity(TypedDict):
    """One activity (call, email, meeting, ...) on the deal."""

    __pydantic_config__ = STRICT
    occurred_at: Annotated[Timestamp, Field(description="When the activity happened.")]
    type: NotRequired[Annotated[Optional[str], Field(description="Activity type, e.g. call, email, meeting.")]]


class Deal(TypedDict):
    """One open deal: its current fields and, optionally, its history."""

    # extra keys are the dataset's declared attributes (e.g. industry, company_size)
    __pydantic_config__ = ConfigDict(STRICT, extra="allow")
    deal_id: Annotated[str, Field(min_length=1, max_length=200,
                                  description="Your CRM's id of the deal (unique in a request).")]
    created_at: Annotated[Timestamp, Field(description="When the deal entered the pipeline.")]
    stage: Annotated[str, Field(min_length=1, description="Current stage (one of the model's stages).")]
    amount: NotRequired[Annotated[Optional[float], Field(ge=0, description="Expected deal value (>= 0).")]]
    stage_entered_at: NotRequired[Annotated[Optional[Timestamp], Field(
        description="When the deal entered its current stage (used when `stage_history` is absent).")]]
    expected_close_date: NotRequired[Annotated[Optional[Timestamp],
                                               Field(description="Expected close date entered in the CRM.")]]
    owner: NotRequired[Annotated[Optional[str], Field(description="Sales rep (id or code; no names needed).")]]
    team: NotRequired[Annotated[Optional[str], Field(description="Sales team.")]]
    region: NotRequired[Annotated[Optional[str], Field(description="Region.")]]
    product: NotRequired[Annotated[Optional[str], Field(description="Product.")]]
    source: NotRequired[Annotated[Optional[str], Field(description="Lead source.")]]
    segment: NotRequired[Annotated[Optional[str], Field(description="Customer segment.")]]
    account_id: NotRequired[Annotated[Optional[str], Field(description="Account (company) id.")]]
    stage_history: NotRequired[Annotated[Optional[list[StageEntry]], Field(
        description="Stage changes in time order; the last entry is the current stage.")]]
    activities: NotRequired[Annotated[Optional[list[Activity]], Field(
        description="Activities so far. Leave out when unknown (missing is not the same as none).")]]


DEAL_FIELDS = Deal.__required_keys__ | Deal.__optional_keys__
_OPTIONAL_NESTED = [("stage_history", StageEntry.__optional_keys__), ("activities", Activity.__optional_keys__)]
_MISSING = object()
_ENTERED_AT = itemgetter("entered_at")
_DEAL_ID = itemgetter("deal_id")


class ValidDeal:
    """`Deal` plus its cross-field checks, validated into a plain dict without None values
    (what `model_dump(exclude_none=True)` gave when deals were models; `ScoreRequest` drops
    those of the nested entries).

    A class rather than `Annotated[Deal, AfterValidator(...)]`: BentoML re-applies the
    metadata of annotated list items, which would run the checks twice."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(check_deal, handler(Deal))


def check_deal(deal: dict) -> dict:
    """Checks across the fields of a validated deal; drops its None values (those of its
    stage history and activities go in one pass per request, see `drop_nested_none`).
    Errors are ValueErrors, reported by pydantic at the deal's path (`deals[3]`)."""
    if None in deal.values():
        deal = {k: v for k, v in deal.items() if v is not None}
    for name in deal.keys() - DEAL_FIELDS:  # declared attributes: scalars only
        value = deal[name]
        if isinstance(value, (dict, list)) or (isinstance(value, float) and value != value):
            raise ValueError(f"attribute '{name}' must be a string, a number or null")
        if isinstance(value, float) and value in (float("inf"), float("-inf")):
            raise ValueError(f"attribute '{name}' must be a finite number")
    history = deal.get("stage_history")
    if history:
        _check_order(list(map(_ENTERED_AT, history)))
        if history[-1]["stage"] != deal["stage"]:
            raise ValueError(f"stage '{deal['stage']}' differs from the last stage_history entry "
                             f"'{history[-1]['stage']}'")
    if "stage_entered_at" in deal and _utc(deal["stage_entered_at"]) < _utc(deal["created_at"]):
        raise ValueError("stage_entered_at is before created_at")
    return deal


def drop_nested_none(deals: list[dict]) -> None:
    """Removes None values from the stage history and activity entries of checked deals, in
    place. The entries of all deals are looked at key by key in C: nulls are rare, and a
    Python loop per entry is what TypedDicts were chosen to avoid."""
    for nested, optional in _OPTIONAL_NESTED:
        items = list(chain.from_iterable(map(dict.get, deals, repeat(nested), repeat(()))))
        if any(None in map(dict.get, items, repeat(key), repeat(_MISSING)) for key in optional):
            for item in items:
                for key in [k for k, v in item.items() if v is None]:
                    del item[key]


def _check_order(times: list[dt.datetime]) -> None:
    try:
        if all(map(le, times, islice(times, 1, None))):
            return
    except TypeError:  # naive and aware times mixed: naive ones are UTC
        times = list(map(_utc, times))
    for i in range(1, len(times)):
        if times[i] < times[i - 1]:
            raise ValueError(f"stage_history[{i}].entered_at is before stage_history[{i - 1}].entered_at: "
                             f"send the history in time order")


class ScoreRequest(_Strict):
    deals: list[ValidDeal] = Field(min_length=1, description="Open deals to score (at most the configured batch "
                                                             "limit, 1,000 by default).")
    as_of: Optional[Timestamp] = Field(None, description="Score as of this time (default: now, UTC).")
    explain: bool = Field(True, description="Include the top positive and negative factors.")
    explain_method: Literal["path", "shap"] = Field(
        "path", description="How factors are attributed: 'path' (each split's change in the tree's expected "
                            "value, as cheap as a prediction) or 'shap' (exact TreeSHAP, ~0.7 ms a deal; the "
                            "two agree on the top factor for ~80 % of deals, see benchmarks/RESULTS.md).")

    @field_validator("deals")
    @classmethod
    def _unique_ids(cls, deals: list[dict]) -> list[dict]:
        ids = list(map(_DEAL_ID, deals))
        if len(set(ids)) < len(ids):
            seen: dict[str, int] = {}
            for i, deal_id in enumerate(ids):
                if deal_id in seen:
                    raise ValueError(f"deals[{i}].deal_id '{deal_id}' repeats deals[{seen[deal_id]}]")
                seen[deal_id] = i
        drop_nested_none(deals)
        return deals


class Factor(BaseModel):
    feature: str = Field(description="Model feature.")
    value: Any = Field(None, description="The deal's value of the feature.")
    impact: float = Field(description="Contribution to the log-odds of winning.")
    sentence: str = Field(description="The factor in words.")


class Factors(BaseModel):
    positive: list[Factor] = Field(description="Up to 3 factors raising the close probability.")
    negative: list[Factor] = Field(description="Up to 3 factors lowering it.")


class Trend(BaseModel):
    direction: Literal["improving", "steady", "declining"] = Field(
        description="Close probability now vs the deal's earliest score of the last 30 days: a change of "
                    "+0.05 or more is improving, -0.05 or less declining (training/monitoring/trend.py).")
    change: float = Field(description="Close probability now minus then.")
    since: UtcTime = Field(description="As-of of the earlier score compared with (UTC).")
    factor: Optional[str] = Field(None, description="The factor that moved most: the first current top factor "
                                                    "on the side of the move that was not a top factor then.")


class ScoredDeal(BaseModel):
    deal_id: str
    as_of: Optional[UtcTime] = Field(None, description="Time the deal was scored at (UTC).")
    close_probability: float = Field(description="Calibrated P(deal is won).")
    score: int = Field(ge=1, le=99, description="close_probability as a 1-99 score.")
    tier: Literal["hot", "warm", "cold", "baseline"] = Field(
        description="hot/warm/cold by the configured thresholds; baseline for every deal when the model is a "
                    "cold-start baseline or a constant (no signal), whose probability ranks nothing.")
    p_close_within_30d: Optional[float] = Field(None, description="P(won within 30 days).")
    p_close_within_60d: Optional[float] = Field(None, description="P(won within 60 days).")
    p_close_within_90d: Optional[float] = Field(None, description="P(won within 90 days).")
    expected_close_date_p10: Optional[dt.date] = Field(None, description="Close date if won, 10th percentile.")
    expected_close_date_p50: Optional[dt.date] = Field(None, description="Close date if won, median.")
    expected_close_date_p90: Optional[dt.date] = Field(None, description="Close date if won, 90th percentile.")
    close_days_p10: Optional[float] = Field(None, description="Days to close if won, 10th percentile.")
    close_days_p50: Optional[float] = Field(None, description="Days to close if won, median.")
    close_days_p90: Optional[float] = Field(None, description="Days to close if won, 90th percentile.")
    top_factors: Optional[Factors] = Field(None, description="Why: top positive and negative factors.")
    stale: bool = Field(False, description="Open longer than any won deal (or longer in its stage): stale_reason.")
    stale_reason: Optional[str] = Field(None, description="Why the deal is stale, in words (None if not stale).")
    model_version: int = Field(description="Registered model version that produced the score.")
    trend: Optional[Trend] = Field(None, description="Improving / steady / declining since the deal's earlier "
                                                     "scores (none without an earlier score in 30 days).")
    warnings: list[str] = Field(default_factory=list,
                                description="Values the model has never seen (scored as unknown) and deal "
                                            "fields that are neither a deal field nor a model attribute (ignored).")


class ScoreResponse(BaseModel):
    model_version: int = Field(description="Registered model version.")
    as_of: Optional[UtcTime] = Field(None, description="Time the deals were scored at (UTC).")
    deals: list[ScoredDeal] = Field(description="One entry per request deal, in request order.")


class TargetEntry(BaseModel):
    """One target, like a line of `leadscore forecast --targets FILE`: period and target, plus,
    for per-group targets, the group's value under a key named like `group_by`."""

    # `example` (OpenAPI's, one value): BentoML builds its own spec of the inputs at `bentoml build`
    # and refuses JSON Schema's `examples` list
    model_config = ConfigDict(STRICT, extra="allow", json_schema_extra={
        "example": {"period": "2025Q1", "region": "EMEA", "target": 2e6}})
    period: str = Field(min_length=1, description="Period label: 2025-01 (month) or 2025Q1 (quarter), inside the "
                                                  "forecast's periods.")
    target: float = Field(ge=0, description="Bookings target of the period (and group).")


class ForecastRequest(_Strict):
    as_of: Optional[Timestamp] = Field(None, description="Forecast from this date (default: the data end).")
    periods: int = Field(3, ge=1, le=36, description="Number of periods to forecast.")
    freq: Literal["month", "quarter"] = Field("month", description="Period length.")
    group_by: Optional[str] = Field(None, description="Split by this deal column, e.g. team or region.")
    targets: Optional[list[TargetEntry]] = Field(
        None, description="Targets, for P(hit target), the gap, pipeline coverage and leads needed: company totals "
                          "([{'period': '2025-01', 'target': 1e6}], also with a group split) or per group, with a key "
                          "named like group_by in every row ([{'period': '2025-01', 'region': 'EMEA', 'target': "
                          "4e5}]).")


class PipelineRequest(_Strict):
    as_of: Optional[Timestamp] = Field(None, description="Metrics as of this date (default: the data end).")
    group_by: Optional[str] = Field(None, description="Also report per value of this deal column.")
    target: Optional[float] = Field(None, ge=0, description="Bookings target, for pipeline coverage.")


class StatusRequest(_Strict):
    """`/status` takes no field."""


class MonitorRequest(_Strict):
    window_days: int = Field(28, ge=1, le=3650, description="Drift: scores of the last N days of the log.")
    psi_warn: float = Field(0.1, ge=0, description="PSI from which a shift warns.")
    psi_alert: float = Field(0.25, ge=0, description="PSI from which a shift alerts.")
    brier_tolerance: float = Field(0.2, ge=0, description="Alert when the realised Brier exceeds the test fold's "
                                                          "by this share.")
    ece_tolerance: float = Field(0.015, ge=0, description="Warn when the realised ECE exceeds the test fold's (or "
                                                          "the expected) by this much.")
    min_outcomes: int = Field(200, ge=1, description="Fewer closed scores: performance not judged.")
    maturity_days: int = Field(90, ge=0, description="Realised figures from scores at least this old.")


def _utc(t: dt.datetime) -> dt.datetime:
    try:
        return t.astimezone(dt.timezone.utc).replace(tzinfo=None) if t.tzinfo is not None else t
    except OverflowError:  # an offset crossing year 1 or 9999
        raise ValueError(f"{t.isoformat()} is out of range in UTC") from None


# --- fast response rendering ------------------------------------------------------

_FIELDS = [(name, info.get_default(call_default_factory=True)) for name, info in ScoredDeal.model_fields.items()]
SCORED_DEFAULTS = dict(_FIELDS)  # a response row's keys (in the order the model writes them) and defaults
SCORED_FIELDS = list(SCORED_DEFAULTS)
_FLOAT_FIELDS = [name for name, info in ScoredDeal.model_fields.items() if info.annotation in (float, Optional[float])]
_DATE_FIELDS = [name for name in ScoredDeal.model_fields if name.startswith("expected_close_date_")]
_TIERS = frozenset(("hot", "warm", "cold", "baseline"))


def score_response_json(model_version: int, as_of, deals: list[dict]) -> bytes:
    """The JSON body of `ScoreResponse(model_version=..., as_of=..., deals=...)`, written by
    orjson from plain dicts instead of building and validating a model per deal and factor
    (1,000 deals: ~60 ms that way, a few ms this way; orjson writes what pydantic-core's
    serializer writes, "Z" times and shortest floats alike, and is ~5x faster on plain dicts).
    The rows come from our own scoring code (`SCORED_FIELDS` in order: taken as they are);
    a row this writer is not sure to render as the model would (a wrong type, a datetime
    where a date belongs, a score out of range, a value JSON cannot hold) falls back to the
    model, whose output is the reference (tests/serving/test_fast_paths.py)."""
    if isinstance(as_of, pd.Timestamp) and not as_of.nanosecond:
        as_of = as_of.to_pydatetime()
    if type(as_of) is dt.datetime:
        as_of = as_utc(as_of)
    rows = [row if list(row) == SCORED_FIELDS else {name: row.get(name, default) for name, default in _FIELDS}
            for row in deals]
    if type(model_version) is int and _utc_datetime(as_of) and all(map(_plain_row, rows)):
        try:
            return orjson.dumps({"model_version": model_version, "as_of": as_of, "deals": rows},
                                option=orjson.OPT_UTC_Z)
        except TypeError:  # e.g. a numpy scalar among the factors, an integer beyond 64 bits
            pass
    return ScoreResponse(model_version=model_version, as_of=as_of, deals=deals).model_dump_json().encode()


def _plain_row(row: dict) -> bool:
    """Whether every field has the exact type the model would write unchanged."""
    score = row["score"]
    return (type(row["deal_id"]) is str and row["tier"] in _TIERS and type(score) is int and 1 <= score <= 99
            and type(row["model_version"]) is int and _utc_datetime(row["as_of"])
            and all(type(row[f]) is float or row[f] is None for f in _FLOAT_FIELDS)
            and all(type(row[f]) is dt.date or row[f] is None for f in _DATE_FIELDS)
            and (row["top_factors"] is None or type(row["top_factors"]) is dict)
            and (row["trend"] is None or _plain_trend(row["trend"]))
            and type(row["warnings"]) is list)


def _plain_trend(trend) -> bool:
    return (type(trend) is dict and trend.get("direction") in ("improving", "steady", "declining")
            and type(trend.get("change")) is float and _utc_datetime(trend.get("since"))
            and trend.get("since") is not None and (trend.get("factor") is None or type(trend["factor"]) is str))


def _utc_datetime(value) -> bool:
    """None or a datetime in UTC (written with "Z", as `UtcTime` writes it)."""
    return value is None or (type(value) is dt.datetime and value.tzinfo is UTC)

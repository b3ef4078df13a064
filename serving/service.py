"""The BentoML service: validates, calls the predictor, shapes the response.

    bentoml serve serving.service:LeadScoreService      (or `leadscore serve`)

Settings come from the environment (see serving/loader.py and serving/auth.py). The
model is the registry's `champion` (or, inside a built Bento, the copy packed with it).
"""
from __future__ import annotations

import gc
import logging
import os
import sys

import bentoml
import numpy as np
import pandas as pd
from starlette.background import BackgroundTask
from starlette.responses import Response

from features.errors import LeadscoreError
from features.payload import payload_arrays
from features.schema import TIMESTAMP_DTYPE
from serving import errors
from serving.auth import ApiKeyMiddleware, load_api_keys
from serving.batching import ScoreBatcher
from serving.loader import ServingConfig, check_champion, load_predictor
from serving.schemas import (
    ForecastRequest,
    PipelineRequest,
    ScoreRequest,
    ScoreResponse,
    score_response_json,
)

log = logging.getLogger("leadscore.serving")
TIMEOUT_S = int(os.environ.get("LEADSCORE_TIMEOUT_S", "30") or 30)
SCORE_COLUMNS = ["deal_id", "as_of", "close_probability", "score", "tier", "p_close_within_30d",
                 "p_close_within_60d", "p_close_within_90d", "expected_close_date_p10", "expected_close_date_p50",
                 "expected_close_date_p90", "close_days_p10", "close_days_p50", "close_days_p90", "top_factors"]


@bentoml.service(name="leadscore", traffic={"timeout": TIMEOUT_S}, workers=1)
class LeadScoreService:
    """Lead scoring, revenue forecast and pipeline metrics for a CRM."""

    @bentoml.on_deployment
    def refuse_to_start_misconfigured() -> None:
        """Runs once before the workers start: a missing champion, key or bad setting is
        one line on stderr and exit code 2, not a traceback per worker."""
        try:
            load_api_keys()
            config = ServingConfig.from_env()
            if LeadScoreService.bento is None:
                check_champion(config.model_name)
        except LeadscoreError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None

    def __init__(self) -> None:
        self.config = ServingConfig.from_env()
        log.setLevel(self.config.log_level)
        self.predictor, self.version = load_predictor(self.config, from_bento=LeadScoreService.bento is not None)
        self._data = None
        self.predictor.warm()
        self.batcher = ScoreBatcher(self.predictor.score_arrays, max_deals=self.config.batch_deals)
        log.info("loaded %s model version %s", self.predictor.kind, self.version)
        # the model, BentoML and MLflow are long-lived: keeping them out of the collector's
        # scans makes the full collections that a 1,000-deal request triggers ~4x cheaper
        gc.collect()
        gc.freeze()

    @bentoml.api(route="/score", input_spec=ScoreRequest, output_spec=ScoreResponse)
    async def score(self, deals, as_of=None, explain: bool = True, explain_method: str = "path"):
        """Score open deals: close probability, 1-99 score, tier, close-date range, reasons."""
        if len(deals) > self.config.max_batch:
            return errors.problem(413, f"{len(deals):,} deals in one request; the limit is {self.config.max_batch:,} "
                                       f"(LEADSCORE_MAX_BATCH): split the batch")
        records = deals  # plain dicts, None values dropped (serving.schemas.ValidDeal)
        at = None if self.predictor.static else _as_of(as_of)
        checked = payload_arrays(records, self.predictor.meta)
        problems = [] if checked.rejects is None else errors.reject_errors(checked.rejects, records)
        if not problems and at is not None:
            problems = errors.future_errors(checked.facts, at)
        if problems:
            return errors.problem(422, f"{len(problems)} invalid field(s); first: {problems[0]['field']}: "
                                       f"{problems[0]['message']}", problems)
        at_rows = np.full(len(records), np.datetime64("NaT") if at is None else np.datetime64(at), dtype=TIMESTAMP_DTYPE)
        # with concurrent requests, if any; False or the contribution method
        scored = await self.batcher.score(checked.arrays, at_rows, explain and explain_method)
        builder = self.predictor.builder
        warnings = errors.unknown_category_warnings(checked.arrays.fields, builder.categories_,
                                                    builder.attribute_features_)
        ids = scored["deal_id"]
        # logged once the response is sent (a background task): the client does not wait for the log
        logged = BackgroundTask(log.info, "scored %d deals (ids %s%s)", len(ids), ",".join(map(str, ids[:5])),
                                ",..." if len(ids) > 5 else "")
        # written as the ScoreResponse JSON directly: validating our own output per deal cost more than scoring
        return Response(score_response_json(self.version, at, _shape_scores(scored, records, warnings, self.version)),
                        media_type="application/json", background=logged)

    @bentoml.api(route="/forecast", input_spec=ForecastRequest)
    def forecast(self, as_of=None, periods: int = 3, freq: str = "month", group_by=None, targets=None) -> dict:
        """Expected bookings per period with P10/P50/P90, open pipeline vs new deals, risk list."""
        from training.forecast.outlook import outlook
        from training.forecast.report import forecast_dict

        data = self._dataset()
        if isinstance(data, errors.JSONResponse):
            return data
        at = _as_of(as_of) if as_of is not None else data.data_end
        goals = None if not targets else pd.DataFrame({"period": list(targets), "target": list(targets.values())})
        try:
            result = outlook(self.predictor, data, at, periods=periods, freq=freq, group_by=group_by, targets=goals)
        except LeadscoreError as exc:
            return errors.problem(422, str(exc))
        return {"model_version": self.version, **forecast_dict(result)}

    @bentoml.api(route="/pipeline", input_spec=PipelineRequest)
    def pipeline(self, as_of=None, group_by=None, target=None) -> dict:
        """Funnel, conversion, time in stage, velocity, coverage, stalled deals, cohorts."""
        from features.analytics import pipeline_metrics

        data = self._dataset()
        if isinstance(data, errors.JSONResponse):
            return data
        try:
            return pipeline_metrics(data, None if as_of is None else _as_of(as_of), group_by=group_by, target=target)
        except LeadscoreError as exc:
            return errors.problem(422, str(exc))

    @bentoml.api(route="/ping")
    async def ping(self) -> dict:
        """Trivial authenticated endpoint: the framework's own latency floor (benchmarks).
        Async like /score, and cheaper than a sync endpoint (no worker-thread hop)."""
        return {"ok": True, "model_version": self.version}

    def _dataset(self):
        """The canonical tables of LEADSCORE_DATA, read once."""
        from features.dataset import read_dataset

        if self.config.data_dir is None:
            return errors.problem(409, "no data source configured: set LEADSCORE_DATA to a canonical tables "
                                       "folder (`leadscore ingest` / `leadscore generate` output)")
        if self._data is None:
            try:
                self._data = read_dataset(self.config.data_dir)
            except LeadscoreError as exc:
                return errors.problem(409, f"LEADSCORE_DATA: {exc}")
        return self._data


logging.getLogger(errors.BENTOML_APP_LOGGER).addFilter(errors.SchemaErrorLogFilter())
def _body_limit() -> int:
    """The body limit, read when the module is imported. A bad setting must not raise here (a
    traceback): `refuse_to_start_misconfigured` reports it in one line and stops the server."""
    try:
        return ServingConfig.from_env().max_body_bytes
    except LeadscoreError:
        return ServingConfig.max_body_bytes


# the first added is the outer one: a request without a key is refused before its body is read
LeadScoreService.add_asgi_middleware(ApiKeyMiddleware)
LeadScoreService.add_asgi_middleware(errors.RequestGuardMiddleware,
                                     max_body_bytes=_body_limit())


def _as_of(value) -> pd.Timestamp:
    from training.predictor import default_as_of

    return default_as_of(value)


def _shape_scores(scored, records: list[dict], warnings: dict[int, list[str]], version: int) -> list[dict]:
    """Scored rows (a frame or {column: values}) in request order, NaN/NaT as null, plus model
    version and warnings. Built from plain column lists: pandas' object conversions cost
    more than the scoring of a deal."""
    columns = {c: _plain_values(scored[c], day=c.startswith("expected_close_date_")) for c in SCORE_COLUMNS if c in scored}
    position = {deal_id: i for i, deal_id in enumerate(columns["deal_id"])}
    rows = []
    for i, rec in enumerate(records):
        k = position.get(rec["deal_id"])
        row = {c: (None if k is None else values[k]) for c, values in columns.items()}
        row["deal_id"] = rec["deal_id"]
        row["model_version"] = version
        row["warnings"] = warnings.get(i, [])
        rows.append(row)
    return rows


def _plain_values(column, day: bool = False) -> list:
    """A column as Python values with None for missing (datetimes as datetime.datetime, or
    datetime.date with `day`)."""
    if isinstance(column, list):
        return column
    values = np.asarray(column)
    if values.dtype.kind == "M":
        return values.astype("datetime64[D]" if day else "datetime64[us]").tolist()  # NaT -> None
    if values.dtype.kind == "f":
        return [None if v != v else v for v in values.tolist()]
    if values.dtype.kind in "iub":
        return values.tolist()
    return [None if v is None or v is pd.NA or (isinstance(v, float) and v != v) else v for v in values.tolist()]

"""The BentoML service: validates, calls the predictor, shapes the response.

    bentoml serve serving.service:LeadScoreService      (or `leadscore serve`)

Settings come from the environment (see serving/loader.py and serving/auth.py). The
model is the registry's `champion` (or, inside a built Bento, the copy packed with it),
checked and pinned before the workers start and followed on promotion (serving/reload.py);
every response names the version that made it (`X-Model-Version`).
"""
from __future__ import annotations

import gc
import logging
import sys
from typing import Callable

import bentoml
import pandas as pd

from features.dates import InvalidDate, parse_as_of
from features.errors import LeadscoreError
from serving import errors, limits, reload
from serving.auth import ApiKeyMiddleware, load_api_keys
from serving.loader import ServingConfig, build_served, deployment_check
from serving.request import score_request
from serving.schemas import ForecastRequest, PipelineRequest, ScoreRequest, ScoreResponse
from training.forecast.track_record import ForecastRecorder

log = logging.getLogger("leadscore.serving")


def _settings() -> ServingConfig:
    """The settings, read when the module is imported (BentoML's decorator and middleware
    need them). A bad setting must not raise here (a traceback): `refuse_to_start_misconfigured`
    reports it in one line and stops the server."""
    try:
        return ServingConfig.from_env()
    except LeadscoreError:
        return ServingConfig()


# BentoML's own timeout a little after the service's: the service answers 503 + Retry-After first
@bentoml.service(name="leadscore", traffic={"timeout": _settings().timeout_s + 5}, workers=1)
class LeadScoreService:
    """Lead scoring, revenue forecast and pipeline metrics for a CRM."""

    @bentoml.on_deployment
    def refuse_to_start_misconfigured() -> None:
        """Runs once before the workers start: a missing key, bad setting, missing champion,
        unreadable registry or champion whose files are missing, altered or do not load is
        one line on stderr and exit code 2, not a traceback per worker; the champion's
        version is pinned for the workers (serving.reload)."""
        try:
            load_api_keys()
            deployment_check(ServingConfig.from_env(), from_bento=LeadScoreService.bento is not None)
        except LeadscoreError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None

    def __init__(self) -> None:
        self.config = ServingConfig.from_env()
        log.setLevel(self.config.log_level)
        from_bento = LeadScoreService.bento is not None
        reload.SLOT.served = build_served(self.config, from_bento=from_bento)  # the pinned version
        self._data = None
        self.track_record = ForecastRecorder()  # a store outage never fails /forecast: a note instead
        self.heavy = {name: limits.EndpointLimiter(name, self.config.heavy_concurrency, self.config.heavy_queue,
                                                   self.config.timeout_s) for name in ("forecast", "pipeline")}
        log.info("loaded %s model version %s", self.predictor.kind, self.version)
        if self.config.reload_s and not from_bento:  # a Bento carries its model: redeploy to change it
            from training.registry import champion_version

            reload.Reloader(self.config.reload_s, lambda: champion_version(self.config.model_name),
                            lambda version: build_served(self.config, version), reload.pinned_version_file()).start()
        # the model, BentoML and MLflow are long-lived: keeping them out of the collector's
        # scans makes the full collections that a 1,000-deal request triggers ~4x cheaper
        gc.collect()
        gc.freeze()

    # the bundle of the version serving this request (taken once when it arrived: serving.reload)
    predictor = property(lambda self: reload.in_use().predictor)
    model = property(lambda self: reload.in_use().model)
    batcher = property(lambda self: reload.in_use().batcher)
    version = property(lambda self: reload.in_use().version)

    @bentoml.api(route="/score", input_spec=ScoreRequest, output_spec=ScoreResponse)
    async def score(self, deals, as_of=None, explain: bool = True, explain_method: str = "path"):
        """Score open deals: close probability, 1-99 score, tier, close-date range, reasons."""
        if len(deals) > self.config.max_batch:
            return errors.problem(413, f"{len(deals):,} deals in one request; the limit is {self.config.max_batch:,} "
                                       f"(LEADSCORE_MAX_BATCH): split the batch")
        try:
            at = None if as_of is None else parse_as_of(as_of)
        except InvalidDate as exc:
            return errors.problem(422, str(exc), [{"field": "as_of", "message": str(exc)}])
        if at is not None and (late := limits.score_as_of_error(at)) is not None:
            return late
        # deals: plain dicts, None values dropped (serving.schemas.ValidDeal)
        return await score_request(self.model, self.batcher, deals, at, explain and explain_method, self.version)

    @bentoml.api(route="/forecast", input_spec=ForecastRequest)
    async def forecast(self, as_of=None, periods: int = 3, freq: str = "month", group_by=None, targets=None):
        """Expected bookings per period with P10/P50/P90, open pipeline vs new deals, risk list."""
        from training.forecast.config import ForecastConfig
        from training.forecast.outlook import outlook
        from training.forecast.report import forecast_dict

        data = self._dataset()
        if isinstance(data, errors.JSONResponse):
            return data
        at = self._as_of(data, as_of)
        if isinstance(at, errors.JSONResponse):
            return at
        config = ForecastConfig()
        too_big = limits.forecast_size_error(data, group_by, periods, config.n_sims, self.config.forecast_budget)
        if too_big is not None:
            return too_big
        goals = None if not targets else pd.DataFrame({"period": list(targets), "target": list(targets.values())})
        predictor, version = self.predictor, self.version  # this request's model, also in the worker thread

        def work() -> dict:
            result = outlook(predictor, data, at, periods=periods, freq=freq, group_by=group_by,
                             targets=goals, config=config)
            self.track_record.record(result, self.config.model_name, version, data)
            return {"model_version": version, **forecast_dict(result)}

        return await self.heavy["forecast"].run(_unprocessable_on_error(work))

    @bentoml.api(route="/pipeline", input_spec=PipelineRequest)
    async def pipeline(self, as_of=None, group_by=None, target=None):
        """Funnel, conversion, time in stage, velocity, coverage, stalled deals, cohorts."""
        from features.analytics import pipeline_metrics

        data = self._dataset()
        if isinstance(data, errors.JSONResponse):
            return data
        at = None if as_of is None else self._as_of(data, as_of)
        if isinstance(at, errors.JSONResponse):
            return at
        return await self.heavy["pipeline"].run(
            _unprocessable_on_error(lambda: pipeline_metrics(data, at, group_by=group_by, target=target)))

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

    @staticmethod
    def _as_of(data, as_of) -> pd.Timestamp | errors.JSONResponse:
        """The request's as-of (the data end by default), or a 422 naming `as_of` when it is
        not a representable date or falls outside the data."""
        if as_of is None:
            return data.data_end
        try:
            at = parse_as_of(as_of)
        except InvalidDate as exc:
            return errors.problem(422, str(exc), [{"field": "as_of", "message": str(exc)}])
        return limits.as_of_error(at, data.deals["created_at"].min(), data.data_end) or at


logging.getLogger(errors.BENTOML_APP_LOGGER).addFilter(errors.SchemaErrorLogFilter())
errors.escape_log_lines()
limits.install_header_timeout(_settings().header_timeout_s)
limits.install_off_loop_parsing()
# the first added is the outer one: every answer names the model version (X-Model-Version);
# a request without a key is refused before its body is read
LeadScoreService.add_asgi_middleware(reload.ModelVersionMiddleware)
LeadScoreService.add_asgi_middleware(ApiKeyMiddleware)
LeadScoreService.add_asgi_middleware(errors.RequestGuardMiddleware,
                                     max_body_bytes=_settings().max_body_bytes)


def _unprocessable_on_error(work: Callable[[], dict]) -> Callable[[], dict | errors.JSONResponse]:
    """`work` with its LeadscoreError (a bad option: group column, period, target) as a 422."""
    def checked() -> dict | errors.JSONResponse:
        try:
            return work()
        except LeadscoreError as exc:
            return errors.problem(422, str(exc))

    return checked

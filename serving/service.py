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

import anyio.to_thread
import bentoml
import pandas as pd

from features.dates import InvalidDate, parse_as_of
from features.errors import LeadscoreError
from features.jsonsafe import json_safe
from serving import big_bodies, errors, limits, reload
from serving.auth import ApiKeyMiddleware, load_api_keys
from serving.columnar import COLUMNAR_BODY_BYTES, install_columnar_score
from serving.data_source import DataSnapshot, DataSource
from serving.docs.site import site as docs_site
from serving.docs.spec import build_spec
from serving.forecast_targets import request_targets
from serving.in_flight import InFlight, InFlightMiddleware
from serving.loader import ServingConfig, build_served, deployment_check
from serving.request import score_request
from serving.schemas import ForecastRequest, MonitorRequest, PipelineRequest, ScoreRequest, ScoreResponse, StatusRequest
from serving.source_refresh import SourceRefresh
from serving.times import mark_utc
from training.forecast.cache import PreparedCache
from training.forecast.track_record import ForecastRecorder
from training.monitoring.trend import seeded_trend_index
from training.store.score_log import ScoreLog

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
        self.data = None if self.config.data_dir is None else DataSource(
            self.config.data_dir, self.config.data_check_s, check=self._check_data)
        self.source = None if self.config.source_mapping is None else SourceRefresh(
            self.config.source_mapping, self.config.data_dir, self.config.source_refresh_s).start()
        self.track_record = ForecastRecorder()  # a store outage never fails /forecast: a note instead
        self.forecasts = PreparedCache()  # /forecast's reusable state per (data fingerprint, as_of, ...)
        # a writer thread, writing while no request is in flight: a store outage never fails /score, it is counted
        self.score_log = ScoreLog(idle=InFlight.idle)
        self.trends = seeded_trend_index()  # recent scores per deal, in memory: no query per request
        self.heavy = {name: limits.EndpointLimiter(name, self.config.heavy_concurrency, self.config.heavy_queue,
                                                   self.config.timeout_s) for name in ("forecast", "pipeline", "monitor")}
        log.info("loaded %s model version %s", self.predictor.kind, self.version)
        docs_site.publish(self._openapi, key=lambda: self.version)
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
        # deals: plain dicts, None values dropped (serving.schemas.ValidDeal), or the columns of a clean body
        return await score_request(self.model, self.batcher, deals, at, explain and explain_method, self.version,
                                   strict_keys=self.config.strict_keys, record=self._record)

    @bentoml.api(route="/forecast", input_spec=ForecastRequest)
    async def forecast(self, as_of=None, periods: int = 3, freq: str = "month", group_by=None, targets=None):
        """Expected bookings per period with P10/P50/P90, open pipeline vs new deals, risk list."""
        from training.forecast.config import ForecastConfig
        from training.forecast.outlook import outlook
        from training.forecast.report import forecast_dict

        snapshot = await self._snapshot()
        if isinstance(snapshot, errors.JSONResponse):
            return snapshot
        data = snapshot.data
        at = self._as_of(data, as_of)
        if isinstance(at, errors.JSONResponse):
            return at
        if (bad := _group_by_error(data, group_by, data.deals.columns)) is not None:
            return bad
        config = ForecastConfig()
        too_big = limits.forecast_size_error(data, group_by, periods, config.n_sims, self.config.forecast_budget)
        if too_big is not None:
            return too_big
        goals = request_targets(targets, data, at, periods, freq, group_by)
        if isinstance(goals, errors.JSONResponse):
            return goals
        predictor, version = self.predictor, self.version  # this request's model, also in the worker thread

        def work() -> dict:
            prepared = self.forecasts.get(predictor, data, at, freq, group_by, config, fingerprint=snapshot.fingerprint)
            result = outlook(predictor, data, at, periods=periods, freq=freq, group_by=group_by,
                             targets=goals, config=config, prepared=prepared)
            self.track_record.record(result, self.config.model_name, version, data)
            return mark_utc({"model_version": version, **forecast_dict(result), "data": self._used(snapshot)})

        return await self.heavy["forecast"].run(_unprocessable_on_error(work))

    @bentoml.api(route="/pipeline", input_spec=PipelineRequest)
    async def pipeline(self, as_of=None, group_by=None, target=None):
        """Funnel, conversion, time in stage, velocity, coverage, stalled deals, cohorts."""
        from features.analytics import pipeline_metrics
        from features.analytics.metrics import group_columns

        snapshot = await self._snapshot()
        if isinstance(snapshot, errors.JSONResponse):
            return snapshot
        at = None if as_of is None else self._as_of(snapshot.data, as_of)
        if isinstance(at, errors.JSONResponse):
            return at
        if (bad := _group_by_error(snapshot.data, group_by, group_columns(snapshot.data))) is not None:
            return bad
        return await self.heavy["pipeline"].run(_unprocessable_on_error(
            lambda: mark_utc({**pipeline_metrics(snapshot.data, at, group_by=group_by, target=target),
                              "data": self._used(snapshot)})))

    @bentoml.api(route="/monitor", input_spec=MonitorRequest)
    async def monitor(self, window_days: int = 28, psi_warn: float = 0.1, psi_alert: float = 0.25,
                      brier_tolerance: float = 0.2, min_outcomes: int = 200, maturity_days: int = 90,
                      ece_tolerance: float = 0.015):
        """Live accuracy of the logged scores against LEADSCORE_DATA's outcomes, and drift
        (`leadscore monitor`'s JSON; its verdict's exit_status: 0 ok, 1 warn or alert)."""
        from training.monitoring.drift import DriftThresholds
        from training.monitoring.monitor import MonitorConfig, monitor_now

        snapshot = await self._snapshot()
        if isinstance(snapshot, errors.JSONResponse):
            return snapshot
        config = MonitorConfig(self.config.model_name, window_days, DriftThresholds(psi_warn, psi_alert),
                               brier_tolerance, min_outcomes, maturity_days, ece_tolerance=ece_tolerance)
        self.score_log.flush(timeout_s=2.0)  # the scores just served count too
        return await self.heavy["monitor"].run(_unprocessable_on_error(lambda: mark_utc(monitor_now(snapshot.data, config))))

    @bentoml.api(route="/ping")
    async def ping(self) -> dict:
        """Trivial authenticated endpoint: the framework's own latency floor (benchmarks).
        Async like /score, and cheaper than a sync endpoint (no worker-thread hop)."""
        return {"ok": True, "model_version": self.version}

    def _record(self, scored) -> list:
        """Queue the scores for the log; each deal's trend from its recent scores."""
        self.score_log.submit(scored, self.config.model_name, self.version)
        return self.trends.observe(scored)

    @bentoml.api(route="/status", input_spec=StatusRequest)
    async def status(self) -> dict:
        """The served version and the score log's counters (written, failed during store
        outages, dropped when its queue was full, outages, pending, store_down)."""
        return mark_utc({"model_version": self.version, "score_log": self.score_log.status()})

    async def _snapshot(self) -> DataSnapshot | errors.JSONResponse:
        """LEADSCORE_DATA as it is now (re-read, off the event loop, when an ingest changed it)."""
        if self.data is None:
            return errors.problem(409, "no data source configured: set LEADSCORE_DATA to a canonical tables "
                                       "folder (`leadscore ingest` / `leadscore generate` output)")
        try:
            return await anyio.to_thread.run_sync(self.data.current)
        except LeadscoreError as exc:
            return errors.problem(409, f"LEADSCORE_DATA: {exc}")

    def _used(self, snapshot: DataSnapshot) -> dict:
        """The answer's `data` block: the tables used and, with a source re-read on an
        interval, how that went (a failed re-read: the last good data, and why)."""
        used = snapshot.used()
        return used if self.source is None else {**used, "refresh": json_safe(self.source.status())}

    def _check_data(self, data) -> None:
        """A re-read LEADSCORE_DATA must still be the model's dataset (ModelDataMismatch)."""
        from training.registry import check_model_data

        check_model_data(self.config.model_name, self.version, data.meta, str(self.config.data_dir),
                         recorded=self.predictor.meta)

    def _openapi(self) -> dict:
        """The OpenAPI document for the model in use (its stages and attributes): serving/docs."""
        return build_spec([api.route for api in LeadScoreService.apis.values()], self.predictor.meta, self.version,
                          strict_keys=self.config.strict_keys)

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
big_bodies.install_off_loop_parsing()
# a clean /score body of many deals is read straight into columns; any other goes to ScoreRequest (serving/columnar.py)
install_columnar_score(lambda: reload.in_use().model.meta, COLUMNAR_BODY_BYTES, big_bodies.PROCESS_BODY_BYTES,
                       big_bodies.THREAD_BODY_BYTES)
# the first added is the outer one: every answer names the model version (X-Model-Version);
# a request without a key is refused before its body is read
LeadScoreService.add_asgi_middleware(InFlightMiddleware)  # the score log writes when none is in flight
LeadScoreService.add_asgi_middleware(reload.ModelVersionMiddleware)
LeadScoreService.add_asgi_middleware(ApiKeyMiddleware)
LeadScoreService.add_asgi_middleware(errors.RequestGuardMiddleware, max_body_bytes=_settings().max_body_bytes,
                                     request_fields={f"/{name}": list(model.model_fields) for name, model in (
                                         ("score", ScoreRequest), ("forecast", ForecastRequest),
                                         ("pipeline", PipelineRequest), ("monitor", MonitorRequest),
                                         ("status", StatusRequest))})
LeadScoreService.mount_asgi_app(docs_site.app, path="/", name="docs")  # /docs, /openapi.json (serving/docs)


def _group_by_error(data, group_by: str | None, allowed) -> errors.JSONResponse | None:
    """A 422 naming `group_by` when it is not a column the deals can be grouped by."""
    if group_by is None or group_by in allowed:
        return None
    from features.analytics.metrics import group_columns

    message = f"cannot group by '{group_by}': choose one of {', '.join(group_columns(data)) or '(none)'}"
    return errors.problem(422, f"group_by: {message}", [{"field": "group_by", "message": message}])


def _unprocessable_on_error(work: Callable[[], dict]) -> Callable[[], dict | errors.JSONResponse]:
    """`work` with its LeadscoreError (a bad option: group column, period, target) as a 422."""
    def checked() -> dict | errors.JSONResponse:
        try:
            return work()
        except LeadscoreError as exc:
            return errors.problem(422, str(exc))

    return checked

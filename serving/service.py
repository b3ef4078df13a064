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
import pandas as pd

from features.errors import LeadscoreError
from serving import errors
from serving.auth import ApiKeyMiddleware, load_api_keys
from serving.batching import ScoreBatcher
from serving.loader import ServingConfig, check_champion, load_served_predictor
from serving.request import score_request
from serving.schemas import ForecastRequest, PipelineRequest, ScoreRequest, ScoreResponse
from training.compiled import CompiledPredictor
from training.forecast.track_record import ForecastRecorder

log = logging.getLogger("leadscore.serving")
TIMEOUT_S = int(os.environ.get("LEADSCORE_TIMEOUT_S", "30") or 30)


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
        self.predictor, self.version = load_served_predictor(self.config, from_bento=LeadScoreService.bento is not None)
        self._data = None
        self.track_record = ForecastRecorder()  # a store outage never fails /forecast: a note instead
        self.model = CompiledPredictor.compile(self.predictor)  # the lookup tables requests need, built once
        self.model.warm()
        self.batcher = ScoreBatcher(self.model, max_deals=self.config.batch_deals)
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
        # deals: plain dicts, None values dropped (serving.schemas.ValidDeal)
        return await score_request(self.model, self.batcher, deals, as_of, explain and explain_method, self.version)

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
        self.track_record.record(result, self.config.model_name, self.version, data)
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

"""/forecast reuses its prepared state for the same data and rebuilds it after a new ingest."""
from __future__ import annotations

import asyncio
from dataclasses import replace

import models_cache
import pytest

from features.dataset import write_dataset
from serving import limits, reload
from serving.data_source import DataSource
from serving.loader import ServingConfig
from serving.service import LeadScoreService
from training.forecast.cache import PreparedCache
from training.forecast.track_record import ForecastRecorder

AS_OF = "2024-06-10"


@pytest.fixture()
def service(tmp_path):
    """The service object without its loader: the small model and dataset set directly."""
    inner = LeadScoreService.inner
    svc = inner.__new__(inner)
    folder = write_dataset(models_cache.small_data()[0], tmp_path / "data")
    svc.config = ServingConfig(data_dir=str(folder), forecast_budget=100_000)
    reload.SLOT.served = reload.Served(predictor=models_cache.small_predictor(), model=None, batcher=None, version=1)
    svc.data = DataSource(folder)
    svc.source = None  # no SQL source re-read
    svc.heavy = {name: limits.EndpointLimiter(name, 1, 2, 120) for name in ("forecast", "pipeline")}
    svc.track_record = ForecastRecorder(url=f"sqlite:///{tmp_path / 'store.db'}")
    svc.forecasts = PreparedCache()
    return svc


def test_forecast_requests_share_the_prepared_state_until_the_data_changes(service):
    first = asyncio.run(service.forecast(as_of=AS_OF, periods=2))
    again = asyncio.run(service.forecast(as_of=AS_OF, periods=3))  # other periods: the same prepared state
    assert (service.forecasts.misses, service.forecasts.hits) == (1, 1)
    assert first["forecast"][0]["expected"] == pytest.approx(again["forecast"][0]["expected"], rel=1e-12)
    # a new ingest into the folder: the service reads the new dataset, whose fingerprint differs
    data = service.data.current().data
    write_dataset(replace(data, deals=data.deals.iloc[1:].reset_index(drop=True)), service.data.folder)
    asyncio.run(service.forecast(as_of=AS_OF, periods=2))
    assert (service.forecasts.misses, service.forecasts.hits) == (2, 1)


def test_a_bad_group_is_a_422_and_caches_nothing(service):
    r = asyncio.run(service.forecast(as_of=AS_OF, group_by="colour"))
    assert r.status_code == 422 and "cannot group by 'colour'" in r.body.decode()
    assert not service.forecasts._entries

"""The served docs and the answers they document, over real HTTP: /docs and the spec,
the /forecast and /pipeline answers against their response models, which data they
used, a new ingest picked up without a restart, per-group targets in the request."""
from __future__ import annotations

import re

import httpx
import models_cache
import pytest

from features.dataset import read_dataset, write_dataset
from serving.docs.spec import UNDOCUMENTED
from serving.report_schemas import ForecastResponse, PipelineResponse
from training.forecast.track_record import dataset_fingerprint

AS_OF = "2024-10-01T00:00:00"


def test_the_docs_page_and_its_spec(served):
    url = served["url"]
    page = httpx.get(url + "/docs", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:)?//""", page.text)
    assert "googletagmanager" not in page.text
    home = httpx.get(url + "/", timeout=10)
    assert home.status_code == 307 and home.headers["location"] == "/docs"
    spec = httpx.get(url + "/openapi.json", timeout=10).json()
    assert httpx.get(url + "/docs.json", timeout=10).json() == spec
    assert UNDOCUMENTED not in str(spec)  # every endpoint the service serves is documented
    assert {"/score", "/forecast", "/pipeline"} <= set(spec["paths"]) and "/ping" not in spec["paths"]
    stages = models_cache.small_data()[0].meta.stages
    assert spec["components"]["schemas"]["Deal"]["properties"]["stage"]["enum"] == stages
    assert f"Model version {served['version']}" in spec["info"]["description"]


def test_the_answers_match_their_models_and_name_their_data(client, served):
    data = read_dataset(served["data_dir"])
    fc = client.post("/forecast", json={"as_of": AS_OF, "periods": 2, "targets": [
        {"period": "2024-10", "target": 400000}, {"period": "2024-11", "target": 500000}]})
    assert fc.status_code == 200, fc.text
    answer = ForecastResponse.model_validate(fc.json())
    assert answer.data.data_fingerprint == dataset_fingerprint(data)
    assert answer.data.data_end == data.data_end.tz_localize("UTC").to_pydatetime() and answer.model_version == served["version"]
    assert [t.period for t in answer.targets if t.group == "(all)"] == ["2024-10", "2024-11"]
    pipe = client.post("/pipeline", json={"as_of": AS_OF, "group_by": "region"})
    assert pipe.status_code == 200, pipe.text
    assert PipelineResponse.model_validate(pipe.json()).data.data_fingerprint == dataset_fingerprint(data)


def test_per_group_targets_over_http(client):
    data = models_cache.small_data()[0]
    regions = sorted(data.deals["region"].dropna().astype(str).unique())
    rows = [{"period": "2024-10", "region": r, "target": 100000} for r in regions]
    r = client.post("/forecast", json={"as_of": AS_OF, "periods": 1, "group_by": "region", "targets": rows})
    assert r.status_code == 200, r.text
    table = {t["group"]: t for t in r.json()["targets"]}
    assert set(table) == {*regions, "(all)"}
    assert table["(all)"]["target"] == pytest.approx(100000 * len(regions))
    bad = client.post("/forecast", json={"as_of": AS_OF, "periods": 1, "targets": rows})  # no group_by
    assert bad.status_code == 422
    assert bad.json()["errors"] == [{"field": "targets[0].region", "message": "the targets have a group column "
                                     "'region': pass group_by region (or drop the column for company targets)"}]


def test_a_new_ingest_is_served_without_a_restart(client, served):
    folder = served["data_dir"]
    original = read_dataset(folder)
    before = client.post("/pipeline", json={"as_of": AS_OF}).json()["data"]
    newer = type(original)(deals=original.deals.iloc[:-50].copy(), meta=original.meta,
                           stage_events=original.stage_events, activities=original.activities,
                           accounts=original.accounts)
    try:
        write_dataset(newer, folder)
        after = client.post("/pipeline", json={"as_of": AS_OF}).json()["data"]
        assert after["data_fingerprint"] == dataset_fingerprint(newer) != before["data_fingerprint"]
        assert after["loaded_at"] >= before["loaded_at"]
    finally:
        write_dataset(original, folder)
    again = client.post("/pipeline", json={"as_of": AS_OF}).json()["data"]
    assert again["data_fingerprint"] == before["data_fingerprint"]

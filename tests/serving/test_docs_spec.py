"""The OpenAPI document (serving/docs/spec.py): a structurally valid OpenAPI 3.1 document
whose every reference resolves, with the bearer scheme, a response model and the error
answers for every public endpoint, the champion's stages and attributes, no internal
endpoint; and the docs page loads only local files."""
from __future__ import annotations

import re

import pytest

from features.schema import DatasetMeta
from serving.docs.site import ASSETS, HERE
from serving.docs.spec import ENDPOINTS, INTERNAL, UNDOCUMENTED, build_spec, score_example
from serving.schemas import ForecastRequest, PipelineRequest, ScoreRequest

META = DatasetMeta(stages=["lead", "qualified", "proposal"], attributes={"industry": "categorical",
                                                                        "company_size": "numeric"}, name="crm")
ROUTES = ["/score", "/forecast", "/pipeline", "/monitor", "/status", "/ping"]
METHODS = {"get", "post", "put", "delete", "patch"}


@pytest.fixture(scope="module")
def spec() -> dict:
    return build_spec(ROUTES, META, model_version=7)


def refs(node) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def test_the_document_is_structurally_valid_openapi(spec):
    assert spec["openapi"].startswith("3.1") and spec["info"]["title"] and spec["info"]["version"]
    assert "model version 7" in spec["info"]["description"].lower()
    schemas = spec["components"]["schemas"]
    for ref in refs(spec):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref
    for path, item in spec["paths"].items():
        assert path.startswith("/") and item and set(item) <= METHODS
        for op in item.values():
            assert op["responses"] and all(re.fullmatch(r"[1-5]\d\d", code) for code in op["responses"])
            assert all(r["description"] for r in op["responses"].values())
    operation_ids = [op["operationId"] for item in spec["paths"].values() for op in item.values()]
    assert len(operation_ids) == len(set(operation_ids))


def test_the_bearer_scheme_covers_the_api_but_not_health(spec):
    assert spec["components"]["securitySchemes"] == {"apiKey": {
        "type": "http", "scheme": "bearer", "description": "A key of LEADSCORE_API_KEYS."}}
    assert spec["security"] == [{"apiKey": []}]
    assert all("security" not in spec["paths"][p]["post"] for p in ENDPOINTS)
    assert spec["paths"]["/healthz"]["get"]["security"] == []


@pytest.mark.parametrize("path,model,codes", [
    ("/score", "ScoreResponse", {"400", "401", "413", "415", "422"}),
    ("/forecast", "ForecastResponse", {"400", "401", "409", "413", "415", "422", "503"}),
    ("/pipeline", "PipelineResponse", {"400", "401", "409", "413", "415", "422", "503"}),
    ("/monitor", "MonitorResponse", {"400", "401", "409", "413", "415", "422", "503"}),
    ("/status", "StatusResponse", {"400", "401", "415", "422"}),
])
def test_every_public_endpoint_has_its_response_model_and_errors(spec, path, model, codes):
    op = spec["paths"][path]["post"]
    assert op["responses"]["200"]["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{model}"}
    assert set(op["responses"]) == {"200", *codes}
    for code in codes:
        assert op["responses"][code]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorBody"}
    error = spec["components"]["schemas"]["ErrorBody"]
    assert set(error["required"]) == {"error", "errors"}
    assert spec["components"]["schemas"][model]["properties"]


def test_the_forecast_and_pipeline_answers_say_which_data(spec):
    schemas = spec["components"]["schemas"]
    for model in ("ForecastResponse", "PipelineResponse"):
        assert schemas[model]["properties"]["data"] == {"$ref": "#/components/schemas/DataUsed"}
    assert {"data_end", "data_fingerprint", "loaded_at"} <= set(schemas["DataUsed"]["properties"])


def test_internal_endpoints_are_left_out(spec):
    assert INTERNAL & set(spec["paths"]) == set()
    assert "/ping" not in str(spec)


def test_the_champions_stages_and_attributes_are_in_the_request_schema(spec):
    deal = spec["components"]["schemas"]["Deal"]
    assert deal["properties"]["stage"]["enum"] == META.stages
    assert spec["components"]["schemas"]["StageEntry"]["properties"]["stage"]["enum"] == META.stages
    assert deal["properties"]["industry"]["type"] == ["string", "null"]
    assert deal["properties"]["company_size"]["type"] == ["number", "null"]
    assert deal["additionalProperties"] is True  # unknown keys are warnings...
    strict = build_spec(ROUTES, META, model_version=7, strict_keys=True)
    assert strict["components"]["schemas"]["Deal"]["additionalProperties"] is False  # ...or refused


def test_the_score_example_is_a_valid_request(spec):
    example = spec["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]["example"]
    request = ScoreRequest.model_validate(example)
    assert request.deals[0]["stage"] == "qualified" and len(request.deals[0]["stage_history"]) == 2
    one_stage = score_example(DatasetMeta(stages=["open"]))
    assert ScoreRequest.model_validate(one_stage).deals[0]["stage"] == "open"


@pytest.mark.parametrize("path,model", [("/forecast", ForecastRequest), ("/pipeline", PipelineRequest)])
def test_the_other_examples_are_valid_requests(spec, path, model):
    model.model_validate(spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["example"])


def test_an_undocumented_route_is_listed_as_such():
    spec = build_spec([*ROUTES, "/monitor2"], META, model_version=1)
    assert spec["paths"]["/monitor2"]["post"]["summary"] == UNDOCUMENTED


def test_the_docs_page_loads_only_local_files():
    page = (HERE / "index.html").read_text()
    sources = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", page)
    assert sources and all(s.startswith("/docs/assets/") or s.startswith("data:") for s in sources), sources
    assert {s.rsplit("/", 1)[1] for s in sources if s.startswith("/docs/assets/")} <= ASSETS.keys()
    assert all(path.is_file() for path in ASSETS.values())
    init = ASSETS["init.js"].read_text()
    assert "validatorUrl: null" in init and "/openapi.json" in init
    assert "googletagmanager" not in page + init


def test_the_site_builds_the_spec_again_when_the_model_changes():
    from serving.docs.site import DocsSite

    site, version, built = DocsSite(), [1], []
    assert site.spec() is None  # not published yet: /openapi.json answers 503

    def build() -> dict:
        built.append(version[0])
        return build_spec(ROUTES, META, model_version=version[0])

    site.publish(build, key=lambda: version[0])
    assert site.spec() is site.spec() and built == [1]
    version[0] = 2
    assert "Model version 2" in site.spec()["info"]["description"] and built == [1, 2]


def test_the_site_routes():
    import asyncio

    import httpx

    from serving.docs.site import DocsSite

    site = DocsSite()

    async def check() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=site.app), base_url="http://docs") as http:
            assert (await http.get("/openapi.json")).status_code == 503  # before the model is loaded
            site.publish(lambda: build_spec(ROUTES, META, model_version=3))
            assert (await http.get("/openapi.json")).json() == (await http.get("/docs.json")).json()
            assert (await http.get("/docs")).headers["content-type"].startswith("text/html")
            assert (await http.get("/")).headers["location"] == "/docs"
            assert (await http.get("/docs/assets/swagger-ui-bundle.js")).status_code == 200
            assert (await http.get("/docs/assets/..%2Fsite.py")).status_code == 404
            assert (await http.get("/docs/assets/secrets.txt")).status_code == 404

    asyncio.run(check())


def test_bentoml_builds_its_own_spec_of_the_service():
    """`bentoml build` writes BentoML's OpenAPI document of the inputs; a JSON Schema key its
    OpenAPI 3.0 model refuses (e.g. `examples`) would fail the build (`make bento`)."""
    from _bentoml_sdk.service.openapi import generate_spec

    from serving.service import LeadScoreService

    assert "/score" in generate_spec(LeadScoreService).paths

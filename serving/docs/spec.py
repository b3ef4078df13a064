"""The OpenAPI 3.1 document of the public API, built from the pydantic request and response
models (not BentoML's generated one: that has no security scheme, no response models for
`/forecast` and `/pipeline`, none of our error answers, and publishes `/ping`).

`build_spec` adds what only the loaded champion knows: its stages (an enum on `stage`)
and its attributes (documented deal fields), and a ready-to-send `/score` example.
Every route the service serves belongs in `ENDPOINTS` or `INTERNAL`: one in neither is
listed as UNDOCUMENTED (tests/serving/test_service_http.py fails on it).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from features.schema import DatasetMeta
from serving.report_schemas import ErrorBody, ForecastResponse, MonitorResponse, PipelineResponse, StatusResponse
from serving.schemas import ForecastRequest, MonitorRequest, PipelineRequest, ScoreRequest, ScoreResponse, StatusRequest

REF = "#/components/schemas/{model}"
INTERNAL = frozenset({"/ping"})  # benchmark floor: served, not published
SECURITY_SCHEME = "apiKey"
UNDOCUMENTED = "not documented yet: add it to serving.docs.spec.ENDPOINTS"
ERROR_TEXT = {
    400: "The body is not valid JSON.",
    401: "Missing or invalid API key (`Authorization: Bearer KEY`).",
    409: "No data to compute from: LEADSCORE_DATA unset, unreadable, or another dataset than the model's.",
    413: "Too large: more deals than LEADSCORE_MAX_BATCH, a body over LEADSCORE_MAX_BODY_BYTES, or a forecast "
         "over LEADSCORE_FORECAST_BUDGET.",
    415: "The body is not JSON (e.g. multipart form data).",
    422: "A field is invalid: `errors` names each with its path (an unknown field with its close match).",
    503: "Busy or too slow (LEADSCORE_HEAVY_CONCURRENCY, LEADSCORE_HEAVY_QUEUE, LEADSCORE_TIMEOUT_S): retry "
         "after the `Retry-After` seconds.",
}


@dataclass(frozen=True)
class Endpoint:
    request: type[BaseModel]
    response: type[BaseModel]
    summary: str
    description: str
    errors: tuple[int, ...]
    example: dict | None = None  # the body "Try it out" starts from (/score's is made from the champion)


ENDPOINTS = {
    "/score": Endpoint(ScoreRequest, ScoreResponse, "Score open deals",
                       "Close probability, 1-99 score, tier, close-date range and the reasons, per deal, in request "
                       "order. A deal key that is neither a deal field nor a model attribute is ignored with a "
                       "warning on that deal (a 422 when the service runs with LEADSCORE_STRICT_KEYS=1).",
                       (400, 401, 413, 415, 422)),
    "/forecast": Endpoint(ForecastRequest, ForecastResponse, "Revenue forecast",
                          "Bookings per period with P10/P50/P90 and each period's landing, open pipeline vs new "
                          "deals, the risk list and, with targets, P(hit target), gap and coverage; computed from "
                          "LEADSCORE_DATA as it is now (`data` says which data).",
                          (400, 401, 409, 413, 415, 422, 503), {"periods": 3, "freq": "month"}),
    "/pipeline": Endpoint(PipelineRequest, PipelineResponse, "Pipeline analytics",
                          "Funnel, conversion, time in stage, velocity, coverage, stalled deals and cohorts, from "
                          "LEADSCORE_DATA as it is now (`data` says which data).",
                          (400, 401, 409, 413, 415, 422, 503), {"target": 1000000}),
    "/monitor": Endpoint(MonitorRequest, MonitorResponse, "Live accuracy and drift",
                         "The logged scores against the outcomes now in LEADSCORE_DATA: realised reliability, ECE, "
                         "Brier and AUC beside the test fold and the calibrated expectation; PSI drift per feature "
                         "and of the score; a verdict (`leadscore monitor`'s JSON).",
                         (400, 401, 409, 413, 415, 422, 503), {"window_days": 28}),
    "/status": Endpoint(StatusRequest, StatusResponse, "Served version and score-log counters",
                        "The model version in use and the score log's counters (rows written, lost to store "
                        "outages, dropped, pending).", (400, 401, 415, 422), {}),
}
HEALTH = {"/healthz": "Alive (BentoML).", "/livez": "Alive (BentoML).",
          "/readyz": "Ready to serve: the model is loaded (BentoML).",
          "/metrics": "Prometheus metrics (BentoML)."}


def build_spec(routes: list[str], meta: DatasetMeta, model_version: int, strict_keys: bool = False,
               title: str = "leadscore", version: str = "1") -> dict:
    """The OpenAPI document for the service's `routes` (those in INTERNAL left out), with
    the champion's stages and attributes."""
    public = sorted((r for r in routes if r not in INTERNAL),
                    key=lambda r: (r not in ENDPOINTS, list(ENDPOINTS).index(r) if r in ENDPOINTS else 0, r))
    documented = [r for r in public if r in ENDPOINTS]
    models = [(ENDPOINTS[r].request, "validation") for r in documented] + \
             [(ENDPOINTS[r].response, "serialization") for r in documented] + [(ErrorBody, "serialization")]
    names, top = models_json_schema(models, ref_template=REF)
    schemas = _local_times(top.get("$defs", {}))
    paths: dict[str, dict] = {}
    for route in public:
        ep = ENDPOINTS.get(route)
        if ep is None:  # a new endpoint nobody documented yet: listed, and said so (a test fails on it)
            paths[route] = {"post": {"summary": UNDOCUMENTED, "operationId": route.strip("/"), "tags": ["API"],
                                     "responses": {"200": {"description": "OK"}}}}
            continue
        responses = {"200": {"description": "OK", "content": _json(names[(ep.response, "serialization")])}}
        for status in ep.errors:
            responses[str(status)] = {"description": ERROR_TEXT[status],
                                      "content": _json(names[(ErrorBody, "serialization")])}
        body = {"required": True, "content": _json(names[(ep.request, "validation")])}
        if ep.example is not None:
            body["content"]["application/json"]["example"] = ep.example
        paths[route] = {"post": {"summary": ep.summary, "description": ep.description, "operationId": route.strip("/"),
                                 "tags": ["API"], "requestBody": body, "responses": responses}}
    for route, text in HEALTH.items():
        paths[route] = {"get": {"summary": text, "tags": ["health"], "security": [],
                                "operationId": route.strip("/"),
                                "responses": {"200": {"description": text, "content": {"text/plain": {
                                    "schema": {"type": "string"}}}}}}}
    if "/score" in paths:
        _champion_fields(schemas, meta, strict_keys)
        paths["/score"]["post"]["requestBody"]["content"]["application/json"]["example"] = score_example(meta)
    return {"openapi": "3.1.0",
            "info": {"title": title, "version": version,
                     "description": f"Lead scoring, revenue forecast and pipeline analytics. Model version "
                                    f"{model_version} (dataset '{meta.name}'). Every endpoint but health and "
                                    f"these docs needs `Authorization: Bearer KEY`: press Authorize."},
            "servers": [{"url": "/"}],
            "paths": paths,
            "components": {"schemas": schemas,
                           "securitySchemes": {SECURITY_SCHEME: {"type": "http", "scheme": "bearer",
                                                                 "description": "A key of LEADSCORE_API_KEYS."}}},
            "security": [{SECURITY_SCHEME: []}]}


def _json(schema_ref: dict) -> dict:
    return {"application/json": {"schema": schema_ref}}


def _champion_fields(schemas: dict, meta: DatasetMeta, strict_keys: bool) -> None:
    """The champion's stages as an enum on every `stage`, its attributes as deal fields."""
    for name in ("Deal", "StageEntry"):
        stage = schemas[name]["properties"]["stage"]
        stage["enum"] = list(meta.stages)
        stage["description"] = f"{stage.get('description', '')} One of: {', '.join(meta.stages)}.".strip()
    deal = schemas["Deal"]
    for attribute, kind in meta.attributes.items():
        kind_schema = {"type": ["number", "null"]} if kind == "numeric" else {"type": ["string", "null"]}
        deal["properties"].setdefault(attribute, {**kind_schema, "description": f"Model attribute ({kind})."})
    deal["additionalProperties"] = not strict_keys


def score_example(meta: DatasetMeta, now: dt.datetime | None = None) -> dict:
    """A valid `/score` body for the champion: one deal created 30 days ago in its second stage."""
    now = (now or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)).replace(microsecond=0)
    created = now - dt.timedelta(days=30)
    stages = list(meta.stages)
    stage = stages[min(1, len(stages) - 1)]
    history = [{"stage": s, "entered_at": (created + dt.timedelta(days=10 * i)).isoformat()}
               for i, s in enumerate(stages[:stages.index(stage) + 1])]
    deal = {"deal_id": "D-1001", "created_at": created.isoformat(), "stage": stage, "amount": 18000,
            "stage_history": history}
    return {"deals": [deal]}


def _local_times(node):
    """Date-times as the service reads them: ISO 8601 with an offset (converted to UTC) or
    without one (taken as UTC), which JSON Schema's `date-time` (RFC 3339, offset required)
    would call invalid; answers are UTC and end in "Z" (serving/times.py)."""
    if isinstance(node, dict):
        if node.get("format") == "date-time":
            node = {k: v for k, v in node.items() if k != "format"}
            node["description"] = (node.get("description", "") + " ISO 8601 date-time; answers give UTC "
                                   "ending in Z; requests may carry an offset, and a time without one is UTC.").strip()
        return {k: _local_times(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_local_times(v) for v in node]
    return node

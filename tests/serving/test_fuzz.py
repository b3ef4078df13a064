"""Schemathesis against the running service's OpenAPI schema: generated requests (valid
and invalid by the schema) never get a 5xx, and documented responses match the schema."""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

MAX_EXAMPLES = 25
OPERATIONS = ["/score", "/forecast", "/pipeline", "/status"]  # /ping is internal: not in the spec


@pytest.fixture(scope="session")
def api_schema(served):
    return schemathesis.openapi.from_url(f"{served['url']}/docs.json")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
@pytest.mark.parametrize("path", OPERATIONS)
def test_no_server_errors_and_documented_shapes(api_schema, served, path, mode):
    operation = api_schema[path]["POST"]
    headers = {"Authorization": f"Bearer {served['api_key']}"}

    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def call(case):
        case.call_and_validate(base_url=served["url"], headers=headers, timeout=60,
                               checks=[not_a_server_error, response_schema_conformance])

    call()

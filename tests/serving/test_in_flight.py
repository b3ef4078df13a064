"""The in-flight count the score log waits on: up for the whole request, down after it (errors too)."""
from __future__ import annotations

import asyncio

import pytest

from serving.in_flight import InFlight, InFlightMiddleware


def test_counts_a_request_from_start_to_end_and_after_an_error():
    seen = []

    async def app(scope, receive, send):
        seen.append(InFlight.count)
        if scope.get("path") == "/boom":
            raise RuntimeError("boom")

    async def nothing(*_):
        return None

    middleware = InFlightMiddleware(app)
    assert InFlight.idle()
    asyncio.run(middleware({"type": "http", "path": "/score"}, nothing, nothing))
    with pytest.raises(RuntimeError):
        asyncio.run(middleware({"type": "http", "path": "/boom"}, nothing, nothing))
    asyncio.run(middleware({"type": "lifespan"}, nothing, nothing))
    assert seen == [1, 1, 0] and InFlight.idle()

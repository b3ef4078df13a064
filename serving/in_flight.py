"""How many HTTP requests this worker is answering now, for work that can wait for a quiet
moment (the score log's writes: `training.store.score_log.ScoreLog(idle=...)`).

`InFlightMiddleware` counts every HTTP request from its start (before the body is read) to
its end (after the response and its background tasks). The count is changed on the event
loop only; other threads read it (an int read is atomic).
"""
from __future__ import annotations


class InFlight:
    """The number of requests in flight in this process."""

    count = 0

    @classmethod
    def idle(cls) -> bool:
        return cls.count == 0


class InFlightMiddleware:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        InFlight.count += 1
        try:
            await self.app(scope, receive, send)
        finally:
            InFlight.count -= 1

"""The docs pages, mounted in the service (`LeadScoreService.mount_asgi_app`):

    /docs           Swagger UI (its assets from /docs/assets/, all local: no tag manager, no CDN,
                    no validator badge)
    /openapi.json   the OpenAPI document (`serving.docs.spec`); /docs.json, BentoML's path, too
    /               redirects to /docs (BentoML's page there loads Google Tag Manager)

Swagger UI's script and style come from the installed BentoML package (the copy its own
page serves); the page and its set-up script are ours (`static/`). The spec is published
by the service once its champion is loaded (`DocsSite.publish`: a builder and the key it
depends on, the model version, so a model reloaded in place gets its own spec).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Hashable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

HERE = Path(__file__).resolve().parent / "static"
PATHS = ("/docs", "/openapi.json", "/docs.json", "/")
ASSETS_PREFIX = "/docs/assets/"


def swagger_ui_dir() -> Path:
    """Swagger UI's files as installed with BentoML."""
    from bentoml._internal import server

    return Path(server.__file__).resolve().parent / "static_content"


ASSETS = {"swagger-ui-bundle.js": swagger_ui_dir() / "swagger-ui-bundle.js",
          "swagger-ui.css": swagger_ui_dir() / "swagger-ui.css",
          "init.js": HERE / "init.js"}


class DocsSite:
    """The docs pages as one Starlette app; the spec is whatever was last published."""

    def __init__(self) -> None:
        self.build: Callable[[], dict] | None = None
        self.key: Callable[[], Hashable] = lambda: None
        self.built: tuple[Hashable, dict] | None = None
        self.app = Starlette(routes=[
            Route("/docs", self.page), Route("/docs/", self.page), Route("/openapi.json", self.openapi),
            Route("/docs.json", self.openapi), Route("/", self.home),
            Route(ASSETS_PREFIX + "{name}", self.asset)])

    def publish(self, build: Callable[[], dict], key: Callable[[], Hashable] = lambda: None) -> None:
        """Serve `build()`, built again whenever `key()` changes."""
        self.build, self.key, self.built = build, key, None

    def spec(self) -> dict | None:
        if self.build is None:
            return None
        key = self.key()
        if self.built is None or self.built[0] != key:
            self.built = (key, self.build())
        return self.built[1]

    async def page(self, request: Request) -> Response:
        return FileResponse(HERE / "index.html", media_type="text/html")

    async def openapi(self, request: Request) -> Response:
        spec = self.spec()
        if spec is None:
            return JSONResponse({"error": "the service is starting: the API description is published once "
                                          "the model is loaded", "errors": []}, status_code=503,
                                headers={"Retry-After": "5"})
        return JSONResponse(spec)

    async def home(self, request: Request) -> Response:
        return RedirectResponse("/docs", status_code=307)

    async def asset(self, request: Request) -> Response:
        path = ASSETS.get(request.path_params["name"])
        if path is None:
            return JSONResponse({"error": "not found", "errors": []}, status_code=404)
        return FileResponse(path)


site = DocsSite()

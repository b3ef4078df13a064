"""The service command: `leadscore serve`."""
from __future__ import annotations

import typer


def serve(
    port: int = typer.Option(3000, "--port", min=1, max=65535, help="Port to listen on."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (0.0.0.0 for all)."),
) -> None:
    """Serve the champion over HTTP with BentoML (/score, /forecast, /pipeline)."""
    from serving.server import serve as serve_http

    raise typer.Exit(serve_http(port, host))

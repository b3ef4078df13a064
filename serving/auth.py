"""API keys: `Authorization: Bearer KEY` on every endpoint but health, readiness,
metrics and the docs, checked in an ASGI middleware so a refused request never reaches
the model. Keys come from `LEADSCORE_API_KEYS` (comma-separated) or the file named by
`LEADSCORE_API_KEYS_FILE` (one per line, # comments); they are never logged.
"""
from __future__ import annotations

import hmac
import json
import os
from pathlib import Path

from features.errors import LeadscoreError

# the docs (serving/docs/site.py) are open: the page asks for a key ("Authorize") and sends it
OPEN_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/metrics", "/", "/docs", "/docs/", "/openapi.json",
                        "/docs.json"})
OPEN_PREFIXES = ("/docs/assets/",)
MIN_KEY_LENGTH = 16


class AuthConfigError(LeadscoreError, ValueError):
    """No usable API key is configured."""


def load_api_keys(env=None) -> list[bytes]:
    """The configured keys (as bytes for `hmac.compare_digest`); AuthConfigError if none."""
    env = os.environ if env is None else env
    raw = [k for k in env.get("LEADSCORE_API_KEYS", "").split(",")]
    path = env.get("LEADSCORE_API_KEYS_FILE", "").strip()
    if path:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as exc:
            raise AuthConfigError(f"LEADSCORE_API_KEYS_FILE {path}: {exc.strerror}") from None
        raw += [line for line in lines if not line.strip().startswith("#")]
    keys = [k.strip() for k in raw if k.strip()]
    if not keys:
        raise AuthConfigError("no API key configured: set LEADSCORE_API_KEYS (comma-separated) or "
                              "LEADSCORE_API_KEYS_FILE")
    short = sum(len(k) < MIN_KEY_LENGTH for k in keys)
    if short:
        raise AuthConfigError(f"{short} API key(s) shorter than {MIN_KEY_LENGTH} characters: use long random "
                              f"keys, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`")
    return [k.encode() for k in keys]


def key_is_valid(presented: bytes, keys: list[bytes]) -> bool:
    """Constant-time check against every key (no early exit that would leak which one)."""
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(presented, key)
    return ok


def is_open_path(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def bearer_token(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" and token.strip() else None
    return None


class ApiKeyMiddleware:
    """ASGI middleware: 401 unless the request carries a configured key."""

    def __init__(self, app, keys: list[bytes] | None = None):
        self.app = app
        self.keys = load_api_keys() if keys is None else keys

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or is_open_path(scope["path"]) or scope["method"] == "OPTIONS":
            return await self.app(scope, receive, send)
        token = bearer_token(scope.get("headers", []))
        if token is not None and key_is_valid(token, self.keys):
            return await self.app(scope, receive, send)
        message = "missing API key: send 'Authorization: Bearer KEY'" if token is None else "invalid API key"
        await send_json(send, 401, {"error": message, "errors": []},
                        extra_headers=[(b"www-authenticate", b'Bearer realm="leadscore"')])


async def send_json(send, status: int, body: dict, extra_headers: list | None = None) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
               *(extra_headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})

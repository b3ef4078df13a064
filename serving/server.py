"""`leadscore serve`: run `bentoml serve serving.service:LeadScoreService` from the
project root, forwarding SIGINT/SIGTERM to it and returning its exit code."""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SERVICE = "serving.service:LeadScoreService"


def serve_command(port: int, host: str = "127.0.0.1") -> list[str]:
    bentoml_cli = Path(sys.executable).with_name("bentoml")
    return [str(bentoml_cli), "serve", SERVICE, "--host", host, "--port", str(int(port))]


def serve(port: int = 3000, host: str = "127.0.0.1") -> int:
    """Serve until interrupted; returns the server's exit code. Without a configured API
    key, one is generated for this run and printed (never logged by the service)."""
    env = dict(os.environ)
    # the embedded tracking store lives under the caller's cwd: pin it before changing dir
    if not env.get("MLFLOW_TRACKING_URI", "").strip():
        from training.tracking import tracking_uri

        env["MLFLOW_TRACKING_URI"] = tracking_uri()
    if env.get("LEADSCORE_DATA"):
        env["LEADSCORE_DATA"] = str(Path(env["LEADSCORE_DATA"]).resolve())
    if not (env.get("LEADSCORE_API_KEYS", "").strip() or env.get("LEADSCORE_API_KEYS_FILE", "").strip()):
        env["LEADSCORE_API_KEYS"] = secrets.token_urlsafe(32)
        print(f"no LEADSCORE_API_KEYS set; this run's API key: {env['LEADSCORE_API_KEYS']}\n"
              f"  curl -H 'Authorization: Bearer {env['LEADSCORE_API_KEYS']}' ...", file=sys.stderr)
    proc = subprocess.Popen(serve_command(port, host), cwd=PROJECT_ROOT, env=env, start_new_session=True)

    def forward(signum, _frame):
        if proc.poll() is None:
            os.killpg(proc.pid, signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

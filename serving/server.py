"""`leadscore serve`: run `bentoml serve serving.service:LeadScoreService` from the
project root, forwarding SIGINT/SIGTERM to it and returning its exit code.

Before anything long starts, `startup_problem` refuses a bad LEADSCORE_* setting, a busy
port or an unreadable LEADSCORE_DATA in one line (exit code 2); the Makefile's serve
targets run the same check first: `python -m serving.server --port PORT`. The server runs
in its own process group and is told by the kernel to stop when the wrapper dies
(PR_SET_PDEATHSIG), so even `kill -9` of `leadscore serve` orphans no server."""
from __future__ import annotations

import argparse
import errno
import os
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Optional

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SERVICE = "serving.service:LeadScoreService"


def serve_command(port: int, host: str = "127.0.0.1") -> list[str]:
    bentoml_cli = Path(sys.executable).with_name("bentoml")
    return [str(bentoml_cli), "serve", SERVICE, "--host", host, "--port", str(int(port))]


def port_problem(port: int, host: str = "127.0.0.1") -> Optional[str]:
    """Why the server could not listen on host:port (in use, not allowed), or None."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # what uvicorn sets: TIME_WAIT is fine
        try:
            sock.bind((host, int(port)))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is already in use; stop what listens there or pick another (--port / PORT=)"
            return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


def data_problem(env: Mapping[str, str]) -> Optional[str]:
    """Why LEADSCORE_DATA (when set) cannot be read as a canonical tables folder, or None."""
    value = env.get("LEADSCORE_DATA", "").strip()
    if not value:
        return None
    folder = Path(value)
    if not folder.is_dir():
        return f"LEADSCORE_DATA={value}: no such folder"
    if not os.access(folder, os.R_OK | os.X_OK):
        return f"LEADSCORE_DATA={value}: folder not readable"
    meta = folder / "meta.json"
    if not meta.is_file() or not os.access(meta, os.R_OK):
        return f"LEADSCORE_DATA={value}: {meta.name} missing or unreadable; run `leadscore ingest` for this folder"
    return None


def settings_problem(env: Mapping[str, str]) -> Optional[str]:
    """Why the LEADSCORE_* settings cannot be used (`ServingConfig.from_env`), or None."""
    from serving.loader import ConfigError, ServingConfig

    try:
        ServingConfig.from_env(env)
    except ConfigError as exc:
        return str(exc)
    return None


def startup_problem(port: int, host: str, env: Mapping[str, str]) -> Optional[str]:
    """The first reason the service would not start (bad setting, busy port, unreadable data), or None."""
    return settings_problem(env) or port_problem(port, host) or data_problem(env)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the wrapper dies, however it dies (Linux)."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: signals are still forwarded while the wrapper lives
        pass


def serve(port: int = 3000, host: str = "127.0.0.1") -> int:
    """Serve until interrupted; returns the server's exit code (2 with one line on stderr
    when the port is busy or LEADSCORE_DATA is unreadable). Without a configured API key,
    one is generated for this run and printed (never logged by the service)."""
    env = dict(os.environ)
    problem = startup_problem(port, host, env)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
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
    proc = subprocess.Popen(serve_command(port, host), cwd=PROJECT_ROOT, env=env, start_new_session=True,
                            preexec_fn=_die_with_parent)

    def forward(signum, _frame):
        if proc.poll() is None:
            os.killpg(proc.pid, signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Optional[list[str]] = None) -> int:
    """`python -m serving.server --port 3000`: exit 2 with one line if serving could not start."""
    parser = argparse.ArgumentParser(description="Check that the service could start (port, LEADSCORE_DATA).")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    problem = startup_problem(args.port, args.host, os.environ)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Helpers for the tests that start real server processes (mlflow server, bentoml serve)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process_group(proc: subprocess.Popen, timeout_s: float = 20) -> None:
    """Stop a server started with start_new_session=True and the workers it forked."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def log_text_once(path, needle: str, timeout_s: float = 5.0) -> str:
    """A server's log file once `needle` is in it (or at the timeout): its worker writes
    log lines shortly after the response."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        text = path.read_text(errors="replace")
        if needle in text or time.monotonic() > deadline:
            return text
        time.sleep(0.1)

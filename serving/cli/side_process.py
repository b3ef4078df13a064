"""A second process for MLflow's slow start, so that a command does not wait for it.

Importing MLflow and opening its store take about as long as the forecast's own imports
and reading the data (~2 CPU s each on 20k deals). A command forks `SideProcess` first
thing, hands it the registry look-up (`training.registry.find_version`) and later the
MLflow run, and meanwhile does its own work; it waits only where it needs an answer. The
calls run in the child in the order they were submitted, their arguments and results go
through a pipe (pickled), and an exception raised there is raised again here, with the
child's traceback as a note under LEADSCORE_DEBUG. The command itself never imports
MLflow. Forked before the command starts any thread (the progress bar's) or reads data.
"""
from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import os
import traceback
from typing import Any, Callable, Iterator

STOP = None  # the message that ends the child's loop


class SideProcessError(RuntimeError):
    """The side process stopped before it answered (killed, out of memory)."""


class SideProcess:
    """One forked child running submitted calls in order; `submit` returns a function that
    waits for that call's result."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("fork")
        self._conn, child_end = context.Pipe()
        self._process = context.Process(target=_serve, args=(child_end, self._conn), daemon=True,
                                        name="leadscore-mlflow")
        self._process.start()
        child_end.close()
        self._sent = 0
        self._replies: list[tuple[bool, Any]] = []

    def submit(self, fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
        """Run `fn(*args)` in the child after the calls before it; returns `result()`, which
        waits for its value (or raises its exception)."""
        self._conn.send((fn, args))
        ticket, self._sent = self._sent, self._sent + 1
        return lambda: self._result(ticket)

    def _result(self, ticket: int) -> Any:
        while len(self._replies) <= ticket:
            try:
                self._replies.append(self._conn.recv())
            except (EOFError, OSError):
                self._process.join(timeout=1)
                raise SideProcessError(f"the MLflow side process stopped (exit code {self._process.exitcode}) "
                                       f"before it answered") from None
        ok, value = self._replies[ticket]
        if not ok:
            raise value
        return value

    def close(self, finished: bool = True) -> None:
        """Let the child finish its calls and stop (`finished`), or stop it now (an error
        in the command: nothing it is doing is needed any more)."""
        if finished and self._process.is_alive():
            with contextlib.suppress(OSError):
                self._conn.send(STOP)
            self._process.join()
        else:
            self._process.terminate()
            self._process.join()
        self._conn.close()


@contextlib.contextmanager
def side_process() -> Iterator[SideProcess]:
    """A `SideProcess` for the block: on success it finishes its calls, on an error it is stopped."""
    side = SideProcess()
    try:
        yield side
    except BaseException:
        side.close(finished=False)
        raise
    side.close()


def import_modules(*names: str) -> None:
    """Import `names` (in the child, while the command works: what unpickling a later call's
    arguments needs is then loaded already)."""
    for name in names:
        importlib.import_module(name)


def _serve(conn, parent_end) -> None:
    """The child's loop: run each call, send back (True, value) or (False, exception)."""
    from training.tracking import forget_inherited_stores

    parent_end.close()
    forget_inherited_stores()
    try:
        while (message := conn.recv()) is not STOP:
            fn, args = message
            try:
                reply = (True, fn(*args))
            except Exception as exc:  # noqa: BLE001 - every failure goes back to the command
                if os.environ.get("LEADSCORE_DEBUG"):
                    exc.add_note("in the MLflow side process:\n" + traceback.format_exc())
                reply = (False, exc)
            try:
                conn.send(reply)
            except Exception as exc:  # noqa: BLE001 - a value or exception that does not pickle
                conn.send((False, SideProcessError(f"{type(exc).__name__}: {exc}")))
    except (EOFError, KeyboardInterrupt):
        pass  # the command ended (or Ctrl-C reached the whole process group): nothing to answer

"""The terminal side of every command: one-line errors, a progress bar, number format."""
from __future__ import annotations

import contextlib
import functools
import os
from typing import Callable, Iterator

import typer
from rich.console import Console

from features.errors import LeadscoreError

console = Console(stderr=True)

THIRD_PARTY = ("mlflow", "bentoml", "lightgbm", "sklearn", "pydantic", "cloudpickle")


def quiet_third_party() -> None:
    """Keep third-party warnings off the console (MLflow's schema hints and CloudPickle notes,
    library deprecations); called where the CLI starts, never in library code.
    LEADSCORE_DEBUG=1 shows them."""
    if os.environ.get("LEADSCORE_DEBUG"):
        return
    import logging
    import warnings

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")  # read when mlflow configures its loggers
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r"(?s).*(Hint: Inferred schema|CloudPickle|cloudpickle)")
    for module in THIRD_PARTY:
        warnings.filterwarnings("ignore", module=rf"{module}(\.|$)")


def readable_errors(fn: Callable) -> Callable:
    """Turn exceptions into a one-line message and a non-zero exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except (LeadscoreError, FileNotFoundError, ValueError, KeyError) as exc:
            if os.environ.get("LEADSCORE_DEBUG"):
                raise
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            console.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
            raise typer.Exit(2)
        except Exception as exc:  # noqa: BLE001 - last line of defence: no traceback for users
            if os.environ.get("LEADSCORE_DEBUG"):
                raise
            console.print(f"[bold red]internal error:[/] {type(exc).__name__}: {exc} "
                          f"(set LEADSCORE_DEBUG=1 for the traceback)", highlight=False, soft_wrap=True)
            raise typer.Exit(1)

    return wrapper


@contextlib.contextmanager
def progress_steps(total: int) -> Iterator[Callable[[str], None]]:
    """A rich progress bar advanced by a `step(name)` callback."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as bar:
        task = bar.add_task("starting", total=total)
        started = [False]

        def step(name: str) -> None:  # a step is done when the next one starts
            bar.update(task, description=name, advance=1 if started[0] else 0)
            started[0] = True

        yield step
        bar.update(task, description="done", completed=total)


def fmt(value) -> str:
    """A metric for a table cell: 4 decimals, '-' when missing."""
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)

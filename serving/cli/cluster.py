"""The `--cluster` option of `features`, `train`, `score` and `backtest` (`training.cluster`)."""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Optional

import typer

from training.cluster import SCHEDULER_ENV, ClusterError, ClusterSpec, parse_cluster


def _checked(value: Optional[str]) -> Optional[ClusterSpec]:
    try:
        return parse_cluster(value)
    except ClusterError as exc:
        raise typer.BadParameter(str(exc).removeprefix(f"--cluster {value!r} ")) from None


def cluster_option() -> Optional[str]:
    """The shared option: checked when the command line is parsed, before anything runs."""
    return typer.Option(None, "--cluster", envvar=SCHEDULER_ENV, callback=_checked,
                        help="Run on Dask: local:N (N worker processes here) or tcp://HOST:PORT "
                             f"(a running scheduler; also ${SCHEDULER_ENV}). Default: pandas in this process.")


@contextmanager
def maybe_cluster(spec: Optional[ClusterSpec]) -> Iterator:
    """A `distributed.Client` on the cluster, or None without one."""
    if spec is None:
        with nullcontext() as none:
            yield none
        return
    from training.cluster import cluster_client

    if not os.environ.get("LEADSCORE_DEBUG"):  # the workers' shutdown chatter is not the command's output
        logging.getLogger("distributed").setLevel(logging.ERROR)
    with cluster_client(spec) as client:
        yield client

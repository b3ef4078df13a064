"""`--cluster SPEC`: which Dask cluster a command runs on, and the client for it.

`local:N` starts a `distributed.LocalCluster` of N worker processes with one thread each
(for the life of the command); `tcp://HOST:PORT` connects to a running scheduler (`dask
scheduler`, `dask worker tcp://HOST:PORT`). The CLI reads the option, else the
environment variable `LEADSCORE_DASK_SCHEDULER`; with neither, everything runs in pandas
in one process. `parse_cluster` checks a spec without starting anything, so a bad one is a
one-line error before any long step; `cluster_client` starts or connects, and an
unreachable scheduler is one line too.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from features.errors import LeadscoreError

SCHEDULER_ENV = "LEADSCORE_DASK_SCHEDULER"
CONNECT_TIMEOUT_S = 20
# snapshot rows `train --cluster` brings to its process by default (~0.9 GiB at ~470 bytes a row;
# `--max-training-rows`): past it, a hash sample of the deals trains
TRAINING_ROWS_MAX = 2_000_000
FIT_LOCK = "leadscore-lightgbm-fit"  # one LightGBM fit at a time on a cluster (`distributed.Lock`)


class ClusterError(LeadscoreError, ValueError):
    """A bad `--cluster` spec, or a cluster that cannot be reached."""


@dataclass(frozen=True)
class ClusterSpec:
    """Either `workers` local worker processes or the `address` of a running scheduler."""

    workers: int | None = None
    address: str | None = None

    def __str__(self) -> str:
        return f"local:{self.workers}" if self.workers is not None else str(self.address)


def parse_cluster(spec: str | None) -> ClusterSpec | None:
    """'local:N' or 'tcp://HOST:PORT' -> a `ClusterSpec`; None or '' -> None (pandas)."""
    if spec is None or not spec.strip():
        return None
    spec = spec.strip()
    if m := re.fullmatch(r"local:(\d+)", spec):
        if not 1 <= int(m.group(1)) <= 256:
            raise ClusterError(f"--cluster {spec}: the number of local workers must be 1 to 256")
        return ClusterSpec(workers=int(m.group(1)))
    if re.fullmatch(r"(tcp|tls)://[A-Za-z0-9.\-_\[\]:]+:\d{1,5}", spec):
        return ClusterSpec(address=spec)
    raise ClusterError(f"--cluster {spec!r} is not a cluster: use local:N (N worker processes on this machine) "
                       f"or tcp://HOST:PORT (a running `dask scheduler`; also ${SCHEDULER_ENV})")


@contextmanager
def cluster_client(spec: ClusterSpec | str, timeout_s: float = CONNECT_TIMEOUT_S, memory_limit: str = "auto"
                   ) -> Iterator["distributed.Client"]:  # noqa: F821
    """A `distributed.Client` on the cluster of `spec`, closed (and a local cluster shut
    down) on exit; a scheduler not answering within `timeout_s` is a `ClusterError`.
    `memory_limit`: each local worker's (e.g. "6GiB"; "auto": the machine's memory / N)."""
    from distributed import Client, LocalCluster

    spec = parse_cluster(spec) if isinstance(spec, str) else spec
    if spec.workers is not None:
        with LocalCluster(n_workers=spec.workers, threads_per_worker=1, processes=True, dashboard_address=None,
                          memory_limit=memory_limit) as cluster, Client(cluster) as client:
            yield client
        return
    try:
        client = Client(spec.address, timeout=f"{timeout_s}s")
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at {spec.address} within {timeout_s:g} s "
                           f"({type(exc).__name__}): start it with `dask scheduler` and workers with "
                           f"`dask worker {spec.address}`") from None
    with client:
        yield client

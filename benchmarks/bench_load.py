"""A mixed load run: `/score` (1 and 1,000 deals) beside concurrent `/forecast` calls.

    leadscore generate --deals 20000 --seed 0 --out DIR && leadscore train --data DIR
    python -m benchmarks.bench_load --data DIR [--duration 60]

(MLFLOW_TRACKING_URI, or the embedded store of the working directory, must hold the champion.)

Starts `bentoml serve` on a free local port (LEADSCORE_DATA=DIR, the default limits) and for
`--duration` seconds keeps 4 clients sending 1-deal `/score`, 2 sending 1,000-deal `/score`
and 4 sending `/forecast` (3 months by owner, over the 20k deals; more than the default
2 running + 4 queued, so some are refused at once with 429/503 by design). Counts every
status per endpoint, samples the worker's RSS every second (max and final stated), and
records the load average. Writes the "Operations: load run" section of
benchmarks/RESULTS.md. Figures only; the reliability tests are in tests/.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import secrets
import signal
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import psutil

from benchmarks.bench_serving import start_server
from benchmarks.results import record
from features.dataset import read_dataset
from tests.payloads import payload_records

DELIBERATE = {429, 503}  # refusals by design: over the queue, or past LEADSCORE_TIMEOUT_S


def worker_rss_mib(proc) -> dict[str, float]:
    """RSS of the `bentoml serve` process and of its workers (MiB)."""
    parent = psutil.Process(proc.pid)
    kids = parent.children(recursive=True)
    return {"server": parent.memory_info().rss / 2**20,
            "workers": sum(p.memory_info().rss for p in kids if p.is_running()) / 2**20}


async def client_loop(client: httpx.AsyncClient, name: str, path: str, body: bytes, until: float,
                      counts: dict, latencies: dict) -> None:
    while time.monotonic() < until:
        started = time.perf_counter()
        try:
            r = await client.post(path, content=body, headers={"Content-Type": "application/json"})
            status = r.status_code
            if status in DELIBERATE:
                await asyncio.sleep(float(r.headers.get("Retry-After", "1")) / 4)
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        counts[name][status] += 1
        latencies[name].append(time.perf_counter() - started)


async def sample_rss(proc, until: float, samples: list) -> None:
    while time.monotonic() < until:
        samples.append(worker_rss_mib(proc))
        await asyncio.sleep(1.0)


async def load_run(url: str, key: str, proc, deals: list[dict], as_of: str, duration: float) -> dict:
    bodies = {"score 1 deal": ("/score", {"deals": deals[:1], "as_of": as_of}, 4),
              "score 1,000 deals": ("/score", {"deals": deals[:1000], "as_of": as_of}, 2),
              "forecast 3 months by owner": ("/forecast", {"periods": 3, "freq": "month", "group_by": "owner"}, 4)}
    counts = {name: collections.Counter() for name in bodies}
    latencies = {name: [] for name in bodies}
    samples: list[dict] = []
    until = time.monotonic() + duration
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120,
                                 limits=limits) as client:
        tasks = [client_loop(client, name, path, json.dumps(body).encode(), until, counts, latencies)
                 for name, (path, body, n) in bodies.items() for _ in range(n)]
        await asyncio.gather(sample_rss(proc, until, samples), *tasks)
    final = worker_rss_mib(proc)
    return {"counts": counts, "latencies": latencies, "samples": samples, "final": final}


def report(result: dict, duration: float, n_deals: int, loadavg: tuple) -> str:
    lines = [f"{duration:g} s against one worker, {n_deals:,} open deals replayed; load average before "
             f"{loadavg[0][0]:.1f}, after {loadavg[1][0]:.1f} (1 min; 2 cores shared by eight sessions: busy)",
             "", "| clients | requests | 200 | 429/503 (deliberate) | other errors | p50 s | p99 s |",
             "|---|---|---|---|---|---|---|"]
    for name, counter in result["counts"].items():
        total = sum(counter.values())
        ok = counter.get(200, 0)
        refused = sum(counter.get(s, 0) for s in DELIBERATE)
        lat = result["latencies"][name] or [float("nan")]
        lines.append(f"| {name} | {total:,} | {ok:,} | {refused:,} | {total - ok - refused:,} | "
                     f"{np.percentile(lat, 50):.3f} | {np.percentile(lat, 99):.3f} |")
    others = {f"{name}: {status}": n for name, counter in result["counts"].items() for status, n in counter.items()
              if status != 200 and status not in DELIBERATE}
    if others:
        lines += ["", "Other answers: " + ", ".join(f"{k} x{n}" for k, n in others.items())]
    workers = [s["workers"] for s in result["samples"]]
    lines += ["", f"Worker RSS sampled every second ({len(workers)} samples): start {workers[0]:,.0f} MiB, "
                  f"max {max(workers):,.0f} MiB, final {result['final']['workers']:,.0f} MiB "
                  f"(the `bentoml serve` supervisor: {result['final']['server']:,.0f} MiB)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="Canonical tables (LEADSCORE_DATA and the payloads).")
    parser.add_argument("--duration", type=float, default=60.0, help="Load-run seconds.")
    args = parser.parse_args(argv)
    data = read_dataset(args.data)
    as_of = data.data_end - pd.Timedelta(days=90)
    deals = payload_records(data, as_of)
    key = secrets.token_urlsafe(32)
    env = {**os.environ, "LEADSCORE_API_KEYS": key, "LEADSCORE_DATA": str(Path(args.data).resolve())}
    proc, url = start_server(env)
    before = os.getloadavg()
    try:
        result = asyncio.run(load_run(url, key, proc, deals, as_of.isoformat(), args.duration))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    body = report(result, args.duration, len(deals), (before, os.getloadavg()))
    print(body)
    record("Operations: load run", body, f"python -m benchmarks.bench_load --data DIR --duration {args.duration:g} "
                                         f"(DIR: leadscore generate --deals 20000 --seed 0)")


if __name__ == "__main__":
    sys.exit(main())

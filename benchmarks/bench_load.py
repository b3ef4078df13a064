"""A mixed load run: `/score` (1 and 1,000 deals) beside concurrent `/forecast` calls.

    leadscore generate --deals 20000 --seed 0 --out DIR && leadscore train --data DIR
    python -m benchmarks.bench_load --data DIR [--duration 60]

(MLFLOW_TRACKING_URI, or the embedded store of the working directory, must hold the champion.)

Starts `bentoml serve` on a free local port (LEADSCORE_DATA=DIR, the default limits) and for
`--duration` seconds keeps 4 clients sending 1-deal `/score`, 2 sending 1,000-deal `/score`
and 4 sending `/forecast` (3 months by owner, over the 20k deals; more than the default
2 running + 4 queued, so some are refused at once with 429/503 by design). Counts every
status per endpoint, samples the worker's RSS every second (max and final stated), and
records the load average. Then the issue's burst: 16 concurrent `/forecast` of 36 quarters by
owner at once (which took the worker from 620 MB to 7.96 GB before the limits): each answer's
status and time, `Retry-After` on the refusals, the worker's RSS sampled every 0.25 s. First,
on the fresh server, the big-body phase: one 14 MB single-deal `/score` (the deal with ~190,000
activities, built like tests/serving/test_operations_http.py's) while a client keeps sending
1-deal `/score` requests, twice (the first starts the body-parsing process of
serving/big_bodies.py): the small requests' median/p99/max during it against the seconds
before it, and the big request's time. Writes the "Operations: load run" section of
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
BIG_BODY_MIB = 14
WHEN = {"before": "in the 5 s before", "during": "while it is in flight"}


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


async def forecast_burst(url: str, key: str, proc, n: int = 16) -> dict:
    """`n` concurrent 36-quarter by-owner forecasts: (status, seconds, Retry-After) each, RSS samples."""
    body = json.dumps({"periods": 36, "freq": "quarter", "group_by": "owner"}).encode()
    samples = [worker_rss_mib(proc)]
    answers: list[tuple] = []

    async def one(client: httpx.AsyncClient) -> None:
        started = time.perf_counter()
        try:
            r = await client.post("/forecast", content=body, headers={"Content-Type": "application/json"})
            answers.append((r.status_code, time.perf_counter() - started, r.headers.get("Retry-After")))
        except httpx.HTTPError as exc:
            answers.append((type(exc).__name__, time.perf_counter() - started, None))

    async def sample(done: asyncio.Event) -> None:
        while not done.is_set():
            samples.append(worker_rss_mib(proc))
            await asyncio.sleep(0.25)

    done = asyncio.Event()
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120,
                                 limits=httpx.Limits(max_connections=n)) as client:
        sampler = asyncio.create_task(sample(done))
        await asyncio.gather(*(one(client) for _ in range(n)))
        done.set()
        await sampler
    await asyncio.sleep(2.0)  # abandoned work, if any, would still hold memory now
    return {"answers": answers, "samples": samples, "after": worker_rss_mib(proc)}


def big_body(deal: dict, as_of: str) -> bytes:
    """A single-deal `/score` body of ~14 MB: the deal with as many activities as fit, each dated
    at `as_of` (the deal is open then, so they are valid)."""
    activity = {"type": "email", "occurred_at": as_of}
    body = json.dumps({"deals": [{**deal, "activities": [activity] * (BIG_BODY_MIB * 2**20 // len(json.dumps(activity)))}],
                       "as_of": as_of}).encode()
    assert (BIG_BODY_MIB - 1) * 2**20 < len(body) < (BIG_BODY_MIB + 2) * 2**20, len(body)
    return body


async def big_body_phase(url: str, key: str, deals: list[dict], as_of: str, rounds: int = 2,
                         before_s: float = 5.0) -> list[dict]:
    """Per round: 1-deal `/score` latencies (ms) for `before_s` seconds, then while one 14 MB
    `/score` is in flight (its status and seconds); the first round starts the body-parsing process."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    small = json.dumps({"deals": deals[:1], "as_of": as_of}).encode()
    big = big_body(deals[0], as_of)
    out = []
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300) as client:
        for _ in range(20):  # warm-up
            await client.post("/score", content=small)
        for k in range(rounds):
            row = {"round": k + 1, "body_mib": len(big) / 2**20, "before": [], "during": [], "small_errors": 0}
            until = time.monotonic() + before_s
            while time.monotonic() < until:
                row["before"].append(await _timed_small(client, small, row))
            started = time.perf_counter()
            sent = asyncio.create_task(client.post("/score", content=big))
            while not sent.done():
                row["during"].append(await _timed_small(client, small, row))
            answer = await sent
            row["big_s"], row["big_status"] = time.perf_counter() - started, answer.status_code
            out.append(row)
    return out


async def _timed_small(client: httpx.AsyncClient, body: bytes, row: dict) -> float:
    started = time.perf_counter()
    r = await client.post("/score", content=body)
    row["small_errors"] += r.status_code != 200
    return (time.perf_counter() - started) * 1000


def big_body_report(rows: list[dict], loadavg: tuple) -> str:
    lines = [f"Big body: one {rows[0]['body_mib']:.1f} MiB single-deal `/score` while one client sends 1-deal "
             f"`/score` requests back to back, twice (round 1 starts the body-parsing process); load average "
             f"before {loadavg[0][0]:.1f}, after {loadavg[1][0]:.1f}.", "",
             "| round | big request | big request s | small requests: when | n | p50 ms | p99 ms | max ms | errors |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        for when in ("before", "during"):
            lat = r[when] or [float("nan")]
            big = (str(r["big_status"]), f"{r['big_s']:.2f}") if when == "during" else ("", "")
            lines.append(f"| {r['round']} | {big[0]} | {big[1]} | {WHEN[when]} | "
                         f"{len(r[when]):,} | {np.percentile(lat, 50):.1f} | {np.percentile(lat, 99):.1f} | "
                         f"{max(lat):.1f} | {r['small_errors'] if when == 'during' else ''} |")
    return "\n".join(lines)


def burst_report(burst: dict) -> str:
    answers = burst["answers"]
    by_status = collections.defaultdict(list)
    for status, seconds, _retry in answers:
        by_status[status].append(seconds)
    parts = [f"{len(times)} x {status} (after {min(times):.2f}-{max(times):.2f} s)"
             for status, times in sorted(by_status.items(), key=lambda kv: str(kv[0]))]
    refused = [retry for status, _s, retry in answers if status in DELIBERATE]
    workers = [s["workers"] for s in burst["samples"]]
    return (f"Burst: {len(answers)} concurrent `/forecast` of 36 quarters by owner: {', '.join(parts)}; "
            f"{sum(r is not None for r in refused)} of {len(refused)} refusals carry Retry-After. Worker RSS "
            f"(the worker and its children) before {workers[0]:,.0f} MiB, max {max(workers):,.0f} MiB, 2 s after "
            f"the last answer {burst['after']['workers']:,.0f} MiB (the issue: 620 MB -> 7.96 GB).")


def report(result: dict, duration: float, n_deals: int, loadavg: tuple) -> str:
    lines = [f"{duration:g} s against one worker, {n_deals:,} open deals replayed; load average before "
             f"{loadavg[0][0]:.1f}, after {loadavg[1][0]:.1f} (1 min; {os.cpu_count()} cores)",
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
    lines += ["", f"Worker RSS (the worker and its children) sampled every second ({len(workers)} samples): start {workers[0]:,.0f} MiB, "
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
    try:
        big_before = os.getloadavg()
        big = asyncio.run(big_body_phase(url, key, deals, as_of.isoformat()))
        big_loadavg = (big_before, os.getloadavg())
        before = os.getloadavg()
        result = asyncio.run(load_run(url, key, proc, deals, as_of.isoformat(), args.duration))
        after = os.getloadavg()
        burst = asyncio.run(forecast_burst(url, key, proc))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    body = "\n\n".join([report(result, args.duration, len(deals), (before, after)), burst_report(burst),
                        big_body_report(big, big_loadavg)])
    print(body)
    record("Operations: load run", body, f"python -m benchmarks.bench_load --data DIR --duration {args.duration:g} "
                                         f"(DIR: leadscore generate --deals 20000 --seed 0)")


if __name__ == "__main__":
    sys.exit(main())

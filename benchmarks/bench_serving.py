"""Serving latency and load: /score against the framework's own floor, over loopback.

    leadscore generate --deals 20000 --seed 0 --out DIR && leadscore train --data DIR
    python -m benchmarks.bench_serving --data DIR [--as-of DATE] [--duration 60]

(MLFLOW_TRACKING_URI, or the embedded store of the working directory, must hold the champion.)

Starts `bentoml serve` on a free local port with the registry's champion, and measures
in one run: p50/p99 of the trivial `/ping` endpoint (the floor: routing, auth middleware,
JSON) and of `/score` with 1 and 1,000 deals, sequential and with 32 concurrent clients,
each as a ratio to the floor; throughput in deals/s; then a bounded load run at 32
concurrent clients counting errors and sampling the server's RSS. Writes the "Serving"
section of benchmarks/RESULTS.md. Figures only; nothing is asserted.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import psutil

from benchmarks.results import record
from features.dataset import read_dataset
from tests.payloads import payload_records

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = 32


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(env: dict, cwd: Path = ROOT) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(Path(sys.executable).with_name("bentoml")), "serve", "serving.service:LeadScoreService",
               "--host", "127.0.0.1", "--port", str(port)]
    # the server's output goes to a file: a pipe nobody reads would fill up and stall the server
    log = tempfile.NamedTemporaryFile(prefix="bench_serving_", suffix=".log", delete=False)
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bentoml serve exited: {Path(log.name).read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"bentoml serve did not become ready in 180 s (log: {log.name})")


def server_rss_mib(proc: subprocess.Popen) -> float:
    """RSS of the server and its workers."""
    parent = psutil.Process(proc.pid)
    procs = [parent, *parent.children(recursive=True)]
    return sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20


async def timed_calls(client: httpx.AsyncClient, path: str, body: dict, n: int, concurrency: int
                      ) -> tuple[list[float], int]:
    """n requests by `concurrency` clients; (latencies in ms, error count)."""
    latencies: list[float] = []
    errors = 0
    queue = iter(range(n))

    content = json.dumps(body).encode()  # encoded once: the client's JSON work is not the server's latency

    async def worker():
        nonlocal errors
        for _ in queue:
            started = time.perf_counter()
            r = await client.post(path, content=content, headers={"Content-Type": "application/json"})
            latencies.append((time.perf_counter() - started) * 1000)
            errors += r.status_code != 200
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


async def interleaved_ratios(url: str, key: str, body: dict, rounds: int = 7, n: int = 100) -> list[float]:
    """p50(/score) / p50(/ping) in `rounds` alternating rounds of `n` sequential calls each:
    a shared machine's load drifts, and alternating keeps both sides under the same drift."""
    ratios = []
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=300) as client:
        for _ in range(rounds):
            floor, _ = await timed_calls(client, "/ping", {}, n, 1)
            lat, _ = await timed_calls(client, "/score", body, n, 1)
            ratios.append(pct(lat, 50) / pct(floor, 50))
    return ratios


async def latency_table(url: str, key: str, deals: list[dict], as_of: str, n_small: int, n_big: int) -> list[dict]:
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=CONCURRENCY)
    one = {"deals": deals[:1], "as_of": as_of}
    big = {"deals": (deals * (1000 // len(deals) + 1))[:1000], "as_of": as_of}
    big["deals"] = [dict(d, deal_id=f"{d['deal_id']}-{i}") for i, d in enumerate(big["deals"])]
    rows = []
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300, limits=limits) as client:
        await timed_calls(client, "/score", one, 20, 1)  # warm-up: imports, caches
        await timed_calls(client, "/score", big, 2, 1)
        for label, conc in (("sequential", 1), (f"{CONCURRENCY} concurrent", CONCURRENCY)):
            floor, _ = await timed_calls(client, "/ping", {}, n_small, conc)
            cases = [("1 deal", one, n_small), ("1,000 deals", big, n_big if conc == 1 else CONCURRENCY)]
            if conc == 1:  # the cost of the explanations
                cases.append(("1,000 deals, explain=false", dict(big, explain=False), n_big))
            for name, body, n in cases:
                started = time.perf_counter()
                lat, errs = await timed_calls(client, "/score", body, n, conc)
                wall = time.perf_counter() - started
                rows.append({"case": f"{name}, {label}", "p50": pct(lat, 50), "p99": pct(lat, 99),
                             "floor_p50": pct(floor, 50), "floor_p99": pct(floor, 99), "n": n, "errors": errs,
                             "deals_per_s": n * len(body["deals"]) / wall})
    return rows


async def mixed_rows(url: str, key: str, deals: list[dict], as_of: str, seconds: float, label: str) -> list[dict]:
    """28 clients posting 1-deal requests while 4 post 1,000-deal ones, for `seconds`: the
    load where merging requests can help (small ones queue behind a big batch)."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    one = json.dumps({"deals": deals[:1], "as_of": as_of}).encode()
    big = {"deals": [dict(d, deal_id=f"{d['deal_id']}-{i}") for i, d in enumerate((deals * 1000)[:1000])], "as_of": as_of}
    big = json.dumps(big).encode()
    stop = time.monotonic() + seconds
    lat: dict[str, list[float]] = {"small": [], "big": []}
    errors = {"small": 0, "big": 0}

    async def client_loop(client, kind: str, body: bytes):
        while time.monotonic() < stop:
            started = time.perf_counter()
            r = await client.post("/score", content=body)
            lat[kind].append((time.perf_counter() - started) * 1000)
            errors[kind] += r.status_code != 200

    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300,
                                 limits=httpx.Limits(max_connections=CONCURRENCY)) as client:
        floor, _ = await timed_calls(client, "/ping", {}, 100, CONCURRENCY)
        await asyncio.gather(*(client_loop(client, "big", big) for _ in range(4)),
                             *(client_loop(client, "small", one) for _ in range(CONCURRENCY - 4)))
    return [{"case": f"mixed: {n} clients x {what}, {label}", "p50": pct(lat[kind], 50), "p99": pct(lat[kind], 99),
             "floor_p50": pct(floor, 50), "floor_p99": pct(floor, 99), "n": len(lat[kind]), "errors": errors[kind],
             "deals_per_s": len(lat[kind]) * size / seconds}
            for kind, n, what, size in (("small", CONCURRENCY - 4, "1 deal", 1), ("big", 4, "1,000 deals", 1000))]


async def load_run(url: str, key: str, proc, deals: list[dict], as_of: str, seconds: float) -> dict:
    """32 clients post 1-10 deal batches for `seconds`; errors and server RSS over time."""
    headers = {"Authorization": f"Bearer {key}"}
    rng = np.random.default_rng(0)
    stop = time.monotonic() + seconds
    counts = {"requests": 0, "errors": 0, "deals": 0}
    rss: list[tuple[float, float]] = []

    async def client_loop(client):
        while time.monotonic() < stop:
            k = int(rng.integers(1, 11))
            start = int(rng.integers(0, max(len(deals) - k, 1)))
            r = await client.post("/score", json={"deals": deals[start:start + k], "as_of": as_of})
            counts["requests"] += 1
            counts["deals"] += k
            counts["errors"] += r.status_code != 200

    async def sampler():
        t0 = time.monotonic()
        while time.monotonic() < stop:
            rss.append((time.monotonic() - t0, server_rss_mib(proc)))
            await asyncio.sleep(1)

    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits) as client:
        await asyncio.gather(sampler(), *(client_loop(client) for _ in range(CONCURRENCY)))
    mem = np.array([m for _, m in rss])
    tenth = max(len(mem) // 10, 1)
    return {**counts, "seconds": seconds, "rss_start": float(mem[:tenth].mean()), "rss_end": float(mem[-tenth:].mean()),
            "rss_max": float(mem.max())}


def report(rows: list[dict], load: dict, n_deals: int, loadavg: tuple[tuple, tuple], ratios: list[float],
           first_deal: tuple[int, int, float, float]) -> str:
    lines = ["| case | p50 ms | p99 ms | floor p50 ms | floor p99 ms | p50 / floor | p99 / floor | deals/s | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['case']} ({r['n']} requests) | {r['p50']:.1f} | {r['p99']:.1f} | {r['floor_p50']:.2f} | "
                     f"{r['floor_p99']:.2f} | {r['p50'] / r['floor_p50']:.1f}x | {r['p99'] / r['floor_p99']:.1f}x | "
                     f"{r['deals_per_s']:,.0f} | {r['errors']} |")
    lines.append("")
    lines.append(f"1 deal against the floor in {len(ratios)} alternating rounds of 100 sequential calls each: p50 ratio "
                 f"median **{np.median(ratios):.2f}x** (rounds: {', '.join(f'{r:.2f}' for r in ratios)}). The 1-deal "
                 f"payload is the first open deal, with {first_deal[0]} stage-history entries and {first_deal[1]} "
                 f"activities (the average deal has {first_deal[2]:.1f} and {first_deal[3]:.1f}).")
    lines.append("")
    lines.append(f"Load run: {load['seconds']:.0f} s at {CONCURRENCY} concurrent clients posting 1-10 deals each: "
                 f"{load['requests']:,} requests ({load['requests'] / load['seconds']:.0f}/s), {load['deals']:,} deals, "
                 f"**{load['errors']} errors**; server RSS {load['rss_start']:.0f} MiB (first tenth) -> "
                 f"{load['rss_end']:.0f} MiB (last tenth), max {load['rss_max']:.0f} MiB.")
    lines.append("")
    lines.append(f"Floor = `/ping` on the same service (auth + body-limit middlewares, BentoML routing, JSON), "
                 f"measured in the same run. Payloads: {n_deals} open deals with full stage history and "
                 f"activities replayed from the data; 1,000-deal requests repeat them under new ids. Requests of up "
                 f"to 20 deals reaching an idle service are scored on the event loop; the others go through the "
                 f"request batcher (serving/batching.py), which merges what queues up behind a batch in flight "
                 f"unless LEADSCORE_BATCH_DEALS=1. The mixed rows run 20 s each. One BentoML "
                 f"worker; client and server share the machine's {os.cpu_count()} cores. Load average (1/5/15 min) "
                 f"before: {'/'.join(f'{x:.2f}' for x in loadavg[0])}, after: "
                 f"{'/'.join(f'{x:.2f}' for x in loadavg[1])}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="Canonical tables the payloads are replayed from.")
    parser.add_argument("--as-of", default=None, help="Score deals open at this date (default: data end - 90 days).")
    parser.add_argument("--duration", type=float, default=60.0, help="Load-run seconds.")
    parser.add_argument("--requests", type=int, default=200, help="Sequential small requests per case.")
    args = parser.parse_args(argv)
    data = read_dataset(args.data)
    as_of = pd.Timestamp(args.as_of) if args.as_of else data.data_end - pd.Timedelta(days=90)
    deals = payload_records(data, as_of)
    key = secrets.token_urlsafe(32)
    env = {**os.environ, "LEADSCORE_API_KEYS": key, "LEADSCORE_DATA": str(Path(args.data).resolve())}
    proc, url = start_server(env)
    load_before = os.getloadavg()
    try:
        rows = asyncio.run(latency_table(url, key, deals, as_of.isoformat(), args.requests, 20))
        ratios = asyncio.run(interleaved_ratios(url, key, {"deals": deals[:1], "as_of": as_of.isoformat()}))
        rows += asyncio.run(mixed_rows(url, key, deals, as_of.isoformat(), 20, "requests merged"))
        load = asyncio.run(load_run(url, key, proc, deals, as_of.isoformat(), args.duration))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    proc, url = start_server({**env, "LEADSCORE_BATCH_DEALS": "1"})
    try:
        rows += asyncio.run(mixed_rows(url, key, deals, as_of.isoformat(), 20, "never merged (LEADSCORE_BATCH_DEALS=1)"))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    sizes = np.array([(len(d.get("stage_history", [])), len(d.get("activities", []))) for d in deals])
    body = report(rows, load, len(deals), (load_before, os.getloadavg()), ratios,
                  (int(sizes[0, 0]), int(sizes[0, 1]), float(sizes[:, 0].mean()), float(sizes[:, 1].mean())))
    print(body)
    record("Serving", body, f"leadscore generate --deals 20000 --seed 0 --out DIR && leadscore train --data DIR && "
                            f"python -m benchmarks.bench_serving --data DIR --duration {args.duration:g}")


if __name__ == "__main__":
    sys.exit(main())

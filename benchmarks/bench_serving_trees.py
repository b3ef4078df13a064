"""Two (or more) source trees served side by side, measured alternately in one run: was a
latency change the code's or the machine's?

    python -m benchmarks.bench_serving_trees --data DIR --tree OLD_TREE=sqlite:///OLD/mlflow.db \\
        --tree .=sqlite:///NEW/mlflow.db [--rounds 5]

Starts `bentoml serve` from each tree (its own PYTHONPATH and MLflow registry: a model
pickles the code that trained it, so each tree serves a champion it trained on DIR) and,
round after round, sends each server 100 `/ping`, 100 one-deal `/score` and 5 1,000-deal
`/score` requests (the payloads of `bench_serving`). Prints p50/p99 per tree and the
one-deal ratio to that tree's own `/ping`, with the load average; nothing is recorded.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import tempfile
import time
from pathlib import Path

import httpx
import pandas as pd

from benchmarks.bench_serving import pct, start_server
from features.dataset import read_dataset
from tests.payloads import payload_records


def bodies(data_dir: str) -> tuple[bytes, bytes]:
    """(one deal, 1,000 deals) as `bench_serving` sends them."""
    data = read_dataset(data_dir)
    as_of = data.data_end - pd.Timedelta(days=90)
    deals = payload_records(data, as_of)
    big = [dict(d, deal_id=f"{d['deal_id']}-{i}") for i, d in enumerate((deals * (1000 // len(deals) + 1))[:1000])]
    return (json.dumps({"deals": deals[:1], "as_of": as_of.isoformat()}).encode(),
            json.dumps({"deals": big, "as_of": as_of.isoformat()}).encode())


async def rounds(urls: list[str], key: str, one: bytes, big: bytes, n_rounds: int) -> list[dict[str, list[float]]]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    clients = [httpx.AsyncClient(base_url=u, headers=headers, timeout=300) for u in urls]
    out = [{"ping": [], "one": [], "big": []} for _ in urls]

    async def calls(client, path: str, body: bytes, n: int) -> list[float]:
        lat = []
        for _ in range(n):
            started = time.perf_counter()
            r = await client.post(path, content=body)
            lat.append((time.perf_counter() - started) * 1000)
            if r.status_code != 200:
                raise SystemExit(f"{path} answered {r.status_code}: {r.text[:300]}")
        return lat

    for client in clients:  # warm-up
        await calls(client, "/score", one, 20)
        await calls(client, "/score", big, 2)
    for _ in range(n_rounds):
        for client, res in zip(clients, out):
            res["ping"] += await calls(client, "/ping", b"{}", 100)
            res["one"] += await calls(client, "/score", one, 100)
            res["big"] += await calls(client, "/score", big, 5)
    for client in clients:
        await client.aclose()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--tree", action="append", required=True, help="PATH=MLFLOW_TRACKING_URI (repeat)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    one, big = bodies(args.data)
    key = secrets.token_urlsafe(32)
    servers = []
    try:
        scratch = Path(tempfile.mkdtemp(prefix="bench_serving_trees_"))
        for i, spec in enumerate(args.tree):
            tree, _, uri = spec.partition("=")
            tree = str(Path(tree).resolve())
            env = {**os.environ, "PYTHONPATH": tree, "LEADSCORE_API_KEYS": key, "MLFLOW_TRACKING_URI": uri,
                   "LEADSCORE_DATA": str(Path(args.data).resolve()),
                   "LEADSCORE_STORE_URL": f"sqlite:///{scratch / f'store_{i}.db'}"}  # each its own score log
            servers.append((tree, *start_server(env, cwd=tree)))
        before = os.getloadavg()
        results = asyncio.run(rounds([url for _, _, url in servers], key, one, big, args.rounds))
        after = os.getloadavg()
    finally:
        for _, proc, _ in servers:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    print("| tree | /ping p50 ms | 1 deal p50 | 1 deal p99 | 1 deal / ping | 1,000 deals p50 | 1,000 deals p99 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for (tree, _, _), r in zip(servers, results):
        print(f"| {tree} | {pct(r['ping'], 50):.2f} | {pct(r['one'], 50):.2f} | {pct(r['one'], 99):.2f} | "
              f"{pct(r['one'], 50) / pct(r['ping'], 50):.2f}x | {pct(r['big'], 50):.1f} | {pct(r['big'], 99):.1f} |")
    print(f"\nload average (1/5/15 min) before {'/'.join(f'{x:.2f}' for x in before)}, "
          f"after {'/'.join(f'{x:.2f}' for x in after)}; {args.rounds} alternating rounds")


if __name__ == "__main__":
    main()

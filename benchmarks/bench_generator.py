"""Generator speed and peak memory for 100k and 1M deals (24 months), each size in a
fresh subprocess so that peak RSS is per size. Writes the figures to RESULTS.md.

    python benchmarks/bench_generator.py            # 100k and 1M
    python benchmarks/bench_generator.py --sizes 100000
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

SIZES = (100_000, 1_000_000)


def run_one(n_deals: int) -> dict:
    """Generate (validate included) and write one dataset; report time and peak RSS."""
    from benchmarks.results import peak_rss_mib
    from features.synthetic import generate

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = generate(tmp, n_deals=n_deals, seed=0)
        seconds = time.perf_counter() - start
    return {"deals": n_deals, "seconds": seconds, "peak_rss_mib": peak_rss_mib(), **summary}


def table(rows: list[dict]) -> str:
    lines = ["| deals | seconds (generate + validate + write) | peak RSS (MiB) | won | lost | open | "
             "stage events | activities |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['deals']:,} | {r['seconds']:.1f} | {r['peak_rss_mib']:,.0f} | {r['won']:,} | "
                     f"{r['lost']:,} | {r['open']:,} | {r['events']:,} | {r['activities']:,} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=list(SIZES))
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child)))
        return
    rows = []
    for n in args.sizes:
        out = subprocess.run([sys.executable, "-m", "benchmarks.bench_generator", "--child", str(n)],
                             check=True, capture_output=True, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{n:>9,} deals: {rows[-1]['seconds']:.1f} s, peak {rows[-1]['peak_rss_mib']:,.0f} MiB", flush=True)
    from benchmarks.results import record

    body = table(rows) + ("\n\nTimes include `features.schema.validate` on every table and the Parquet "
                          "writes; one process per size.")
    record("Generator", body, "python -m benchmarks.bench_generator")
    print(table(rows))


if __name__ == "__main__":
    main()

"""Generator speed and peak memory for 100k and 1M deals (24 months), each size in a
fresh subprocess so that peak RSS is per size. Writes the figures to RESULTS.md.

    python benchmarks/bench_generator.py            # 100k and 1M
    python benchmarks/bench_generator.py --sizes 100000
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

SIZES = (100_000, 1_000_000)


def run_one(n_deals: int) -> dict:
    """Generate, validate and write one dataset, timing each phase; report peak RSS."""
    from pathlib import Path

    from benchmarks.results import peak_rss_mib
    from features.dataset import write_dataset
    from features.synthetic.generator import generate_raw, make_params, summarize, validated

    p = make_params(n_deals, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        raw, truth = generate_raw(p)
        t1 = time.perf_counter()
        data = validated(raw, p)
        t2 = time.perf_counter()
        write_dataset(data, tmp)
        (Path(tmp) / "truth").mkdir()
        truth.to_parquet(Path(tmp) / "truth" / "truth.parquet", index=False)
        (Path(tmp) / "truth" / "params.json").write_text(json.dumps(truth.attrs["params"]))
        t3 = time.perf_counter()
    return {"deals": n_deals, "generate_s": t1 - t0, "validate_s": t2 - t1, "write_s": t3 - t2,
            "seconds": t3 - t0, "peak_rss_mib": peak_rss_mib(), **summarize(data)}


def table(rows: list[dict]) -> str:
    lines = ["| deals | total s | simulate + tables s | validate s | write s | peak RSS (MiB) | won | lost | "
             "open | stage events | activities |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['deals']:,} | {r['seconds']:.1f} | {r['generate_s']:.1f} | {r['validate_s']:.1f} | "
                     f"{r['write_s']:.1f} | {r['peak_rss_mib']:,.0f} | {r['won']:,} | {r['lost']:,} | "
                     f"{r['open']:,} | {r['events']:,} | {r['activities']:,} |")
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

    body = table(rows) + ("\n\nOne fresh process per size (peak RSS is per size). `validate` is "
                          "`features.validation.validate` on every table, as `generate` runs it. Load average "
                          f"at the end: {os.getloadavg()[0]:.1f} (the machine is shared).")
    record("Generator", body, "python -m benchmarks.bench_generator")
    print(table(rows))


if __name__ == "__main__":
    main()

"""What "current data" costs `/forecast` and `/pipeline` (serving/data_source.py): the
per-request check that LEADSCORE_DATA did not change (a few `stat` calls), against reading
the tables again and fingerprinting them after an ingest, on generated data.

    python -m benchmarks.bench_data_source [--deals 20000]

Reference in the same run: one `os.stat` of deals.parquet. Figures only; nothing asserted.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from features.dataset import write_dataset
from features.synthetic import generate_data
from serving.data_source import DataSource


def per_call_us(fn, n: int) -> float:
    """Median of 5 rounds of `n` calls, in microseconds per call."""
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(n):
            fn()
        rounds.append((time.perf_counter() - started) / n * 1e6)
    return statistics.median(rounds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deals", type=int, default=20000)
    args = parser.parse_args(argv)
    data, _truth = generate_data(args.deals, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_dataset(data, Path(tmp) / "data")
        source = DataSource(folder)
        source.current()
        stat_us = per_call_us(lambda: os.stat(folder / "deals.parquet"), 2000)
        check_us = per_call_us(source.current, 2000)
        reads = []
        for _ in range(3):
            write_dataset(data, folder)  # an ingest: the same rows, a new folder
            started = time.perf_counter()
            source.current()
            reads.append((time.perf_counter() - started) * 1e3)
    load = os.getloadavg()
    print(f"{args.deals:,} deals; load average {load[0]:.1f} (2 cores, shared)")
    print(f"one os.stat (reference): {stat_us:.1f} us")
    print(f"unchanged check per request: {check_us:.1f} us ({check_us / stat_us:.1f}x one stat)")
    print(f"re-read + fingerprint after an ingest: {statistics.median(reads):.0f} ms (median of 3; "
          f"{statistics.median(reads) * 1e3 / check_us:,.0f}x the check)")


if __name__ == "__main__":
    main()

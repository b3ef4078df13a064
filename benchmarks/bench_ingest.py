"""Ingestion speed on the two real exports in ../shared/data (or $LEADSCORE_SHARED_DATA).

    python -m benchmarks.bench_ingest [--repeats 5]

Writes the "Ingestion" section of benchmarks/RESULTS.md: per mapping the rows read, the
median wall time of a full `ingest` (read, map, validate, write parquet + rejects) and
rows per second. Figures only; nothing is asserted.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.results import record
from features.sources import ingest

ROOT = Path(__file__).resolve().parents[1]
MAPPINGS = ["x_education.yaml", "x_education_no_leaky.yaml", "olist.yaml"]


def bench(mapping: Path, repeats: int) -> dict:
    times, report = [], None
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            report = ingest(mapping, out)
            times.append(time.perf_counter() - started)
    rows = int(report.counts["rows_in"].sum())
    seconds = statistics.median(times)
    return {"mapping": mapping.name, "rows": rows, "rejected": int(report.counts["rejected"].sum()),
            "seconds": seconds, "best": min(times), "rows_per_s": rows / seconds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    os.chdir(ROOT)  # the mappings' default data path (../shared/data) is relative to the project
    results = [bench(ROOT / "features" / "mappings" / m, args.repeats) for m in MAPPINGS]
    lines = ["| mapping | rows read (all tables) | rejected | median s | best s | rows/s |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['mapping']} | {r['rows']:,} | {r['rejected']:,} | {r['seconds']:.3f} | "
                     f"{r['best']:.3f} | {r['rows_per_s']:,.0f} |")
    table = "\n".join(lines)
    note = (f"\n\nMedian of {args.repeats} full `ingest` runs each (read CSV, apply mapping, validate, "
            "write parquet + rejects.csv + meta.json). Olist rows read = 8,000 leads + 842 closed deals.")
    print(table)
    record("Ingestion", table + note, f"python -m benchmarks.bench_ingest --repeats {args.repeats}")


if __name__ == "__main__":
    sys.exit(main())

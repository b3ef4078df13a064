"""Run every benchmark in turn (`make bench`); each writes its own section of RESULTS.md."""
from __future__ import annotations

import subprocess
import sys

BENCHES = [
    ["benchmarks.bench_generator"],
    ["benchmarks.bench_ingest", "--repeats", "5"],
    ["benchmarks.bench_features"],
    ["benchmarks.bench_analytics", "--deals", "100000"],
    ["benchmarks.bench_training", "--deals", "100000"],
    ["benchmarks.bench_forecast", "--deals", "100000", "--origins", "12", "--sims", "1000"],
]


def main() -> int:
    for bench in BENCHES:
        print(f"== {' '.join(bench)}", flush=True)
        code = subprocess.call([sys.executable, "-m", *bench])
        if code:
            return code
    print("bench_serving needs a trained champion: see its docstring", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

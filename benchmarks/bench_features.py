"""Point-in-time feature speed: weekly snapshots over two years of generated deals.

    python benchmarks/bench_features.py [--deals 100000] [--no-record]

Times fit + transform + labels, the peak resident memory while they run (sampled, so the
generator's own memory is not counted), snapshot rows per second, and a per-step profile
of what dominates. Figures go to benchmarks/RESULTS.md; nothing here is asserted.
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import threading
import time

import psutil

from benchmarks.results import record
from features.build import FeatureBuilder
from features.labels import make_labels
from features.snapshots import as_of_grid

STEPS = ["event_state", "from_canonical", "fit_history", "snapshot_positions", "state_at", "activity_counts",
         "_history_features", "_stage_features", "_deal_columns", "make_labels"]


class PeakRss:
    """Samples this process's RSS every 20 ms while active."""

    def __enter__(self):
        self.proc, self.peak, self.running = psutil.Process(), 0, True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.02)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()


def run(data, as_of):
    builder = FeatureBuilder().fit(data)
    X = builder.transform(data, as_of)
    y = make_labels(data, X[["deal_id", "as_of"]])
    return builder, X, y


def step_profile(data, as_of) -> list[tuple[str, float]]:
    prof = cProfile.Profile()
    prof.runcall(run, data, as_of)
    stats = pstats.Stats(prof).stats
    out = {}
    for (path, _line, name), (_cc, _nc, _tt, cum, _callers) in stats.items():
        if name in STEPS and ("features" in path):
            out[name] = out.get(name, 0.0) + cum
    return sorted(out.items(), key=lambda kv: -kv[1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--deals", type=int, default=100_000)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)

    from features.synthetic import generate_data

    t0 = time.perf_counter()
    data, _truth = generate_data(args.deals, seed=0)
    gen_s = time.perf_counter() - t0
    as_of = as_of_grid(data)
    base_rss = psutil.Process().memory_info().rss

    with PeakRss() as mem:
        t0 = time.perf_counter()
        builder = FeatureBuilder().fit(data)
        t1 = time.perf_counter()
        X = builder.transform(data, as_of)
        t2 = time.perf_counter()
        y = make_labels(data, X[["deal_id", "as_of"]])
        t3 = time.perf_counter()
    total = t3 - t0
    steps = step_profile(data, as_of)

    n_ev = 0 if data.stage_events is None else len(data.stage_events)
    n_act = 0 if data.activities is None else len(data.activities)
    table = f"""
Input: `features.synthetic.generate_data({args.deals}, seed=0)` ({gen_s:.1f} s to generate, not counted):
{len(data.deals):,} deals, {n_ev:,} stage events, {n_act:,} activities; {len(as_of)} weekly as-of dates
({as_of[0].date()} .. {as_of[-1].date()}) -> {len(X):,} snapshot rows x {len(builder.feature_names_)} features.

| step | seconds |
|---|---|
| fit (category levels, history tables) | {t1 - t0:.2f} |
| transform (snapshots + all features) | {t2 - t1:.2f} |
| labels | {t3 - t2:.2f} |
| **total** | **{total:.2f}** |

| figure | value |
|---|---|
| snapshot rows per second (total) | {len(X) / total:,.0f} |
| peak RSS during fit+transform+labels | {mem.peak / 2**30:.2f} GiB (process before: {base_rss / 2**30:.2f} GiB, holding the generated data) |
| feature matrix in memory | {X.memory_usage(deep=True).sum() / 2**20:.0f} MiB |
| label rows with a known outcome | {y['won'].notna().mean():.1%} |

What dominates (cumulative seconds under cProfile, a second run; profiling adds overhead and
steps nest: `event_state` runs in both fit and transform):

| function | seconds |
|---|---|
""" + "\n".join(f"| `{name}` | {sec:.2f} |" for name, sec in steps) + f"""

Aim: under 60 s and under 4 GiB -> {"met" if total < 60 and mem.peak < 4 * 2**30 else "NOT met"}.
"""
    print(table)
    if not args.no_record:
        record("Point-in-time features", table, ("python -m benchmarks.bench_features " + " ".join(argv or sys.argv[1:])).strip())


if __name__ == "__main__":
    main()

"""Time of the full pipeline analytics over 100k generated deals.

Run: `python benchmarks/bench_analytics.py [--deals N]`. Only `pipeline_metrics` is
timed (generation is not); the reference is a groupby over the same deals table in the
same process (win rate and mean amount by owner x stage of close), so the ratio says
how many such passes the analytics cost, independent of how busy the machine is.
"""
from __future__ import annotations

import argparse
import time

import pandas as pd

from benchmarks.results import peak_rss_mib, record
from features.analytics import pipeline_metrics
from features.synthetic import generate_data


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deals", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data, _truth = generate_data(n_deals=args.deals, seed=args.seed)
    as_of = data.data_end - pd.Timedelta(days=45)
    deals = data.deals

    def reference():
        won = deals["outcome"].eq("won")
        deals.assign(won=won).groupby(["owner", "segment"]).agg(win_rate=("won", "mean"), amount=("amount", "mean"))

    ref = best_of(reference)
    total = best_of(lambda: pipeline_metrics(data, as_of, target=5e7), repeat=2)
    grouped = best_of(lambda: pipeline_metrics(data, as_of, group_by="team", target=5e7), repeat=1)
    n_teams = deals["team"].nunique()
    body = (f"| what | seconds | x reference groupby |\n|---|---:|---:|\n"
            f"| reference: groupby owner x segment over {len(deals):,} deals | {ref:.3f} | 1 |\n"
            f"| `pipeline_metrics` total ({len(deals):,} deals, {len(data.stage_events):,} events, "
            f"{len(data.activities):,} activities) | {total:.2f} | {total / ref:.0f} |\n"
            f"| `pipeline_metrics` grouped by team ({n_teams} groups + total) | {grouped:.2f} | {grouped / ref:.0f} |\n\n"
            f"Peak RSS {peak_rss_mib():.0f} MiB (includes generation). Best of 2 (total) / 1 (grouped) runs.")
    print(body)
    record("Pipeline analytics", body, f"python -m benchmarks.bench_analytics --deals {args.deals}")


if __name__ == "__main__":
    main()

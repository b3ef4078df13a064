"""Backtest grid: the forecast's accuracy on generated data over seeds x sizes x frequencies.

    python -m benchmarks.bench_backtest_grid [--sizes 20000 60000 100000] [--seeds 0 1 2 3 4]
        [--freqs month quarter] [--cache /tmp/leadscore_grid] [--stop-at 02:50]

One cell = one generated dataset (size, seed), one model trained on the data known at the
first origin (as `backtest()` would train it), then the rolling-origin backtest: 12 monthly
or 4 quarterly origins, model vs oracle vs baselines. A cell holds when model WAPE <= 1.25 x
the oracle's and <= 0.6 x the best baseline's, and P10-P90 coverage is in [0.70, 0.90].
Generated data and trained models are cached under --cache (pickles), finished cells in
<cache>/cells.json, so an interrupted run resumes. Writes the "Backtest grid (seeds x
sizes)" section of benchmarks/RESULTS.md. Figures only; nothing asserted.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import binom

from benchmarks.results import record
from features.jsonsafe import json_safe
from training.forecast.backtest import backtest
from training.forecast.config import ForecastConfig

ORIGINS = {"month": 12, "quarter": 4}
FULL = {"sizes": [20_000, 60_000, 100_000], "seeds": [0, 1, 2, 3, 4], "freqs": ["month", "quarter"]}
BOUNDS = {"oracle": 1.25, "baseline": 0.6, "coverage": (0.70, 0.90)}


def cached(path: Path, make):
    """Unpickle `path`, else make it and pickle it there."""
    if path.exists():
        return pickle.loads(path.read_bytes())
    value = make()
    path.write_bytes(pickle.dumps(value))
    return value


def run_cell(n: int, seed: int, freq: str, cache: Path, sims: int) -> dict:
    from features.synthetic import generate_data
    from features.timetravel import truncate_at
    from training.forecast.backtest import backtest_origins
    from training.train import TrainConfig, fit_predictor

    data, truth = cached(cache / f"data_{n}_{seed}.pkl", lambda: generate_data(n, seed=seed))
    first = backtest_origins(data, freq, ORIGINS[freq])[0]
    predictor = cached(cache / f"model_{n}_{seed}_{first.date()}.pkl",
                       lambda: fit_predictor(truncate_at(data, first), TrainConfig()).predictor)
    started = time.perf_counter()
    result = backtest(data, freq, ORIGINS[freq], truth=truth, predictor=predictor,
                      config=ForecastConfig(n_sims=sims), oracle_sims=300)
    s = json_safe(result["summary"])
    cell = {"deals": n, "seed": seed, "freq": freq, "origins": ORIGINS[freq],
            "seconds": round(time.perf_counter() - started, 1),
            "wape": s["model"]["wape"], "oracle_wape": s["oracle"]["wape"],
            "vs_oracle": s.get("model_wape_vs_oracle"), "vs_best_baseline": s.get("model_wape_vs_best_baseline"),
            "coverage": s["model"]["coverage_p10_p90"], "oracle_coverage": s["oracle"]["coverage_p10_p90"]}
    cell["holds"] = holds(cell)
    cell["rows"] = json_safe(result["rows"])
    return cell


def holds(cell: dict) -> bool:
    return wape_holds(cell) and coverage_holds(cell["coverage"])


def wape_holds(cell: dict) -> bool:
    """The WAPE half of the bound: <= 1.25 x the oracle's and <= 0.6 x the best baseline's."""
    return bool(cell["vs_oracle"] is not None and cell["vs_oracle"] <= BOUNDS["oracle"]
                and cell["vs_best_baseline"] is not None and cell["vs_best_baseline"] <= BOUNDS["baseline"])


def coverage_holds(coverage: float | None) -> bool:
    lo, hi = BOUNDS["coverage"]
    return coverage is not None and lo <= coverage <= hi


def calibrated_pass(n: int) -> float:
    """P(a perfectly calibrated 80 % band covers a share in the coverage bound of n periods): binomial."""
    lo, hi = BOUNDS["coverage"]
    return float(sum(binom.pmf(k, n, 0.8) for k in range(n + 1) if lo <= k / n <= hi))


def table(cells: list[dict], before: dict | None = None) -> str:
    """One row per cell; with `before` (cells of another run by key, e.g. the previous code on
    the same data and models), its WAPE / oracle, coverage and verdict beside."""
    head = "| deals | seed | freq (origins) | WAPE | oracle WAPE | / oracle | / best baseline | WAPE bounds " \
           "| P10-P90 coverage | oracle coverage | P(calibrated band in bound) | holds | backtest s |"
    rule = "|---:|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---|---:|"
    if before is not None:
        head += " before: / oracle | before: coverage | before: holds |"
        rule += "---:|---:|---|"
    lines = [head, rule]
    for c in sorted(cells, key=lambda c: (c["deals"], c["freq"], c["seed"])):
        line = (f"| {c['deals']:,} | {c['seed']} | {c['freq']} ({c['origins']}) | {c['wape']:.3f} | "
                f"{c['oracle_wape']:.3f} | {c['vs_oracle']:.2f} | {c['vs_best_baseline']:.2f} | "
                f"{'yes' if wape_holds(c) else '**no**'} | {c['coverage']:.2f} | {c['oracle_coverage']:.2f} | "
                f"{calibrated_pass(len(c['rows'])):.2f} | {'yes' if c['holds'] else '**no**'} | {c['seconds']:.0f} |")
        if before is not None:
            b = before.get(cell_key(c))
            line += (f" {b['vs_oracle']:.2f} | {b['coverage']:.2f} | {'yes' if b['holds'] else 'no'} |" if b
                     else " not run | | |")
        lines.append(line)
    held = sum(c["holds"] for c in cells)
    out = "\n".join(lines) + (f"\n\n{held} of {len(cells)} cells hold (bounds: model WAPE <= 1.25 x oracle, "
                              f"<= 0.6 x best baseline, P10-P90 coverage 0.70-0.90), the WAPE bounds alone "
                              f"{sum(wape_holds(c) for c in cells)}")
    if before is not None:
        paired = [before[cell_key(c)] for c in cells if cell_key(c) in before]
        out += (f"; before, {sum(b['holds'] for b in paired)} and {sum(wape_holds(b) for b in paired)} "
                f"of the same {len(paired)}")
    return out + "."


def cell_key(cell: dict) -> str:
    return f"{cell['deals']}/{cell['seed']}/{cell['freq']}"


def pooled(cells: list[dict], label: str = "") -> str:
    """Per size and frequency, every origin of every seed together: WAPE / the oracle's,
    P10-P90 coverage (with its binomial standard error at 0.8) beside the oracle's; cells whose
    coverage is in the bound, the model's and the oracle's, beside the number a perfectly
    calibrated band would reach on average (`calibrated_pass` per cell)."""
    lines = ["| run | deals | freq | cells | origins | WAPE / oracle | P10-P90 coverage | oracle coverage "
             "| cells with coverage in bound: model / oracle / calibrated band (expected) | cells holding |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    keys = sorted({(c["deals"], c["freq"]) for c in cells})
    for n, freq in keys:
        group = [c for c in cells if (c["deals"], c["freq"]) == (n, freq)]
        rows = [r for c in group for r in c["rows"] if r.get("model") is not None and np.isfinite(r["model"])]
        y = np.array([r["actual"] for r in rows])
        err = np.abs(np.array([r["model"] for r in rows]) - y).sum()
        oracle_err = np.abs(np.array([r["oracle"] for r in rows]) - y).sum()
        inside = np.mean([r["model_p10"] <= r["actual"] <= r["model_p90"] for r in rows])
        oracle_inside = np.mean([r["oracle_p10"] <= r["actual"] <= r["oracle_p90"] for r in rows])
        se = np.sqrt(0.8 * 0.2 / len(rows))
        in_bound = (f"{sum(coverage_holds(c['coverage']) for c in group)} / "
                    f"{sum(coverage_holds(c['oracle_coverage']) for c in group)} / "
                    f"{sum(calibrated_pass(len(c['rows'])) for c in group):.1f}")
        lines.append(f"| {label} | {n:,} | {freq} | {len(group)} | {len(rows)} | {err / oracle_err:.2f} | {inside:.2f} "
                     f"(+-{se:.2f}) | {oracle_inside:.2f} | {in_bound} | {sum(c['holds'] for c in group)} |")
    return "\n".join(lines)


def coverage_odds() -> str:
    """How often a perfectly calibrated P10-P90 band (80 %) lands inside the bound per cell."""
    lo, hi = BOUNDS["coverage"]
    parts = []
    for freq, n in ORIGINS.items():
        hits = [k for k in range(n + 1) if lo <= k / n <= hi]
        odds = calibrated_pass(n)
        parts.append(f"{freq} ({n} origins): only {' or '.join(str(k) for k in hits)} of {n} inside qualify, "
                     f"probability {odds:.2f}")
    return ("A perfectly calibrated 80 % band meets the per-cell coverage bound by chance only: "
            + "; ".join(parts) + ". Even the true process (the oracle column) misses it in many cells; the pooled "
            "coverage over all origins of a size and frequency is the meaningful figure.")


def per_origin(cell: dict) -> str:
    """A missed cell origin by origin: errors of the model and the oracle relative to the
    actual, and where the model's expectation departs from the oracle's (open pipeline,
    new deals), with the common shock the calibration estimated and from how many past periods."""
    lines = [f"{cell['deals']:,} deals, seed {cell['seed']}, {cell['freq']}: per origin (errors / actual)", "",
             "| origin | actual | model err | oracle err | in model P10-P90 | open pipeline - oracle's | "
             "new deals - oracle's | shock sd | past periods calibrating |", "|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in cell["rows"]:
        y = r["actual"]
        inside = r["model_p10"] <= y <= r["model_p90"]
        lines.append(f"| {r['origin'][:10]} | {y:,.0f} | {(r['model'] - y) / y:+.3f} | {(r['oracle'] - y) / y:+.3f} | "
                     f"{'yes' if inside else 'no'} | {(r['model_open_pipeline'] - r['oracle_open_pipeline']) / y:+.3f} | "
                     f"{(r['model_new_deals'] - r['oracle_new_deals']) / y:+.3f} | {r['shock_relative_sd']:.3f} | "
                     f"{r.get('shock_periods_used', '')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=FULL["sizes"])
    parser.add_argument("--seeds", type=int, nargs="+", default=FULL["seeds"])
    parser.add_argument("--freqs", nargs="+", default=FULL["freqs"], choices=sorted(ORIGINS))
    parser.add_argument("--sims", type=int, default=1000)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/leadscore_grid"))
    parser.add_argument("--stop-at", default=None, help="HH:MM UTC: start no cell after it")
    parser.add_argument("--fresh", action="store_true", help="ignore the finished cells in the cache")
    parser.add_argument("--before", type=Path, default=None,
                        help="a cache of another run (e.g. the previous code, same data and models) to compare with")
    args = parser.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    done_path = args.cache / "cells.json"
    done = {} if args.fresh or not done_path.exists() else json.loads(done_path.read_text())
    wanted = [(n, seed, freq) for n in args.sizes for freq in args.freqs for seed in args.seeds]
    for n, seed, freq in wanted:
        key = f"{n}/{seed}/{freq}"
        if key in done:
            continue
        if args.stop_at and dt.datetime.now(dt.timezone.utc).strftime("%H:%M") >= args.stop_at:
            print(f"stopping before {key}: past {args.stop_at} UTC", flush=True)
            break
        done[key] = run_cell(n, seed, freq, args.cache, args.sims)
        done_path.write_text(json.dumps(done, indent=1))
        c = done[key]
        print(f"{key}: WAPE {c['wape']:.3f} (oracle {c['oracle_wape']:.3f}, x{c['vs_oracle']:.2f}), "
              f"x{c['vs_best_baseline']:.2f} best baseline, coverage {c['coverage']:.2f}, "
              f"{'holds' if c['holds'] else 'MISSES'}, {c['seconds']:.0f} s", flush=True)
    cells = list(done.values())  # every finished cell in the cache, from this run or earlier ones
    full = [(n, seed, freq) for n in FULL["sizes"] for freq in FULL["freqs"] for seed in FULL["seeds"]]
    missing = [f"{n:,}/{s}/{f}" for n, s, f in full if f"{n}/{s}/{f}" not in done]
    before = json.loads((args.before / "cells.json").read_text()) if args.before else None
    body = table(cells, before) + (f"\n\nCells of the full grid not run yet (deals/seed/freq): {', '.join(missing)}."
                                   if missing else "")
    both = pooled(cells, "after" if before else "")
    if before:
        paired = [before[k] for k in done if k in before]
        both += "\n" + "\n".join(pooled(paired, "before").splitlines()[2:])
    body += f"\n\nPooled per size and frequency (all seeds' origins together):\n\n{both}\n\n{coverage_odds()}"
    monthly = [c for c in cells if c["freq"] == "month" and c["vs_oracle"] is not None]
    if monthly:  # the worst monthly cell, origin by origin
        body += f"\n\n{per_origin(max(monthly, key=lambda c: c['vs_oracle']))}"
    print(body)
    record("Backtest grid (seeds x sizes)", body,
           "python -m benchmarks.bench_backtest_grid " + " ".join(argv if argv is not None else sys.argv[1:]))


if __name__ == "__main__":
    sys.exit(main())

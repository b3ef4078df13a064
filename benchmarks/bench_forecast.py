"""Revenue forecast backtest on generated data (against the oracle) and on the Olist funnel.

    python -m benchmarks.bench_forecast [--deals 100000] [--origins 12] [--sims 1000]

Generated data (seed 0): one model trained on the data known at the first of 12 monthly
origins, then model vs oracle vs baselines (WAPE, bias, P10-P90 coverage, pinball).
Olist (features/mappings/olist.yaml): no amounts, so the forecast counts won deals.
Writes the "Revenue forecast backtest" section of benchmarks/RESULTS.md and the full
JSON next to it (benchmarks/forecast_backtest_*.json). Figures only; nothing asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.results import peak_rss_mib, record
from features.errors import NotEnoughData
from features.jsonsafe import json_safe
from training.forecast.backtest import backtest
from training.forecast.config import ForecastConfig

ROOT = Path(__file__).resolve().parents[1]
AIMS = "aims: model WAPE <= 1.25 x oracle WAPE, <= 0.6 x best baseline WAPE, P10-P90 coverage 0.70-0.90"


def run_generated(n_deals: int, origins: int, sims: int) -> dict:
    from features.synthetic import generate_data
    from features.timetravel import truncate_at
    from training.forecast.backtest import backtest_origins
    from training.train import TrainConfig, fit_predictor

    started = time.perf_counter()
    data, truth = generate_data(n_deals, seed=0)
    first = backtest_origins(data, "month", origins)[0]
    trained = time.perf_counter()
    # the same model backtest() would train itself, trained here to time it
    predictor = fit_predictor(truncate_at(data, first), TrainConfig()).predictor
    training_seconds = time.perf_counter() - trained
    result = backtest(data, "month", origins, truth=truth, predictor=predictor, config=ForecastConfig(n_sims=sims),
                      oracle_sims=300, step=lambda s: print(s, flush=True))
    result["seconds"] = time.perf_counter() - started
    result["training_seconds"] = training_seconds
    return json_safe(result)


def run_olist(origins: int, sims: int) -> dict | str:
    from features.dataset import read_dataset
    from features.sources import ingest

    os.chdir(ROOT)  # the mapping's default data path is relative to the project root
    with tempfile.TemporaryDirectory() as tmp:
        ingest(ROOT / "features" / "mappings" / "olist.yaml", tmp)
        data = read_dataset(tmp)
    for n in range(origins, 2, -1):
        try:
            return json_safe(backtest(data, "month", n, config=ForecastConfig(n_sims=sims), step=print))
        except NotEnoughData as exc:
            last = str(exc)
    return f"not enough history for 3 monthly origins: {last}"


def _row(name: str, m: dict) -> str:
    f = lambda v, d=3: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
    return (f"| {name} | {f(m.get('wape'))} | {f(m.get('bias'))} | {f(m.get('coverage_p10_p90'), 2)} | "
            f"{f(m.get('pinball_scaled'))} |")


def table(result: dict) -> str:
    s = result["summary"]
    lines = ["| forecast | WAPE | bias | P10-P90 coverage | pinball / mean actual |", "|---|---:|---:|---:|---:|",
             _row("model", s["model"])]
    if "oracle" in s:
        lines.append(_row("oracle (true process)", s["oracle"]))
    lines += [_row(f"baseline: {k}", v) for k, v in s["baselines"].items()]
    ratios = []
    if "model_wape_vs_oracle" in s:
        ratios.append(f"model / oracle WAPE = {s['model_wape_vs_oracle']:.2f}")
    if "model_wape_vs_best_baseline" in s:
        ratios.append(f"model / best baseline WAPE = {s['model_wape_vs_best_baseline']:.2f}")
    return "\n".join(lines) + "\n\n" + "; ".join(ratios) + f" ({AIMS})."


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=100_000)
    parser.add_argument("--origins", type=int, default=12)
    parser.add_argument("--sims", type=int, default=1000)
    parser.add_argument("--skip-olist", action="store_true")
    args = parser.parse_args(argv)
    gen = run_generated(args.deals, args.origins, args.sims)
    (ROOT / "benchmarks" / "forecast_backtest_generated.json").write_text(json.dumps(gen, indent=1))
    body = [f"### Generated data: {args.deals:,} deals, seed 0, {args.origins} monthly origins "
            f"({gen['origins'][0][:10]} to {gen['origins'][-1][:10]})", "", table(gen), "",
            f"Model: {gen['strategy']}.", "",
            f"Wall time {gen['seconds'] / 60:.1f} min (training {(gen.get('training_seconds') or 0) / 60:.1f} min), "
            f"peak RSS {peak_rss_mib():,.0f} MiB, {args.sims} simulations per forecast."]
    if not args.skip_olist:
        olist = run_olist(args.origins, args.sims)
        if isinstance(olist, dict):
            (ROOT / "benchmarks" / "forecast_backtest_olist.json").write_text(json.dumps(olist, indent=1))
            body += ["", f"### Olist funnel (mapping features/mappings/olist.yaml), {len(olist['origins'])} monthly "
                         f"origins ({olist['origins'][0][:10]} to {olist['origins'][-1][:10]})", "",
                     "No deal amounts in Olist: every figure counts won deals.", "", table(olist)]
        else:
            body += ["", f"### Olist funnel: {olist}"]
    text = "\n".join(body)
    print(text)
    record("Revenue forecast backtest", text,
           f"python -m benchmarks.bench_forecast --deals {args.deals} --origins {args.origins} --sims {args.sims}")


if __name__ == "__main__":
    sys.exit(main())

"""Revenue forecast backtest on generated data (against the oracle) and on the Olist funnel,
and the forecast's speed against a reference tree.

    python -m benchmarks.bench_forecast [--deals 100000] [--origins 12] [--sims 1000]
    python -m benchmarks.bench_forecast --speed-only [--speed-deals 20000] [--cli-repeats 3]
        [--backtest-deals 100000] [--reference /work/main]

Speed (section "Forecast speed (accuracy slice)"): on generated data (seed 0) with a model
trained on it, the same timing script runs in this tree and in the reference tree (read
only), one after the other in this run: the first forecast (what `leadscore forecast`
computes), the p50 of the next requests of `/forecast` (3 monthly periods; this tree
reuses `training.forecast.cache.PreparedCache`, as the service does) and a 4-origin
quarterly backtest; then the whole `leadscore forecast` command (a dataset and a model made
with this tree's `generate` and `train` in a temporary folder) and a 12-origin monthly
backtest on --backtest-deals deals; the ratios reference / this tree are written with the
load average.

Generated data (seed 0): one model trained on the data known at the first of 12 monthly
origins, then model vs oracle vs baselines (WAPE, bias, P10-P90 coverage, pinball).
Olist (features/mappings/olist.yaml): no amounts, so the forecast counts won deals.
Writes the "Revenue forecast backtest" section of benchmarks/RESULTS.md and the full
JSON next to it (benchmarks/forecast_backtest_*.json). Figures only; nothing asserted. The
commands alone, with `leadscore score` too: `benchmarks.bench_cli_speed`.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_backtest_grid import cached
from benchmarks.bench_cli_speed import prepared_folder, time_commands
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
    result["backtest_seconds"] = time.perf_counter() - trained - training_seconds
    return json_safe(result)


# runs in either tree: only names both have (outlook, forecast_dict, backtest), the cache when there is one
TIMING = """
import json, pickle, statistics, sys, time
from training.forecast.backtest import backtest
from training.forecast.config import ForecastConfig
from training.forecast.outlook import outlook
from training.forecast.report import forecast_dict
data, truth, predictor, bt_predictor, repeats = pickle.load(open(sys.argv[1], "rb"))
try:
    from training.forecast.cache import PreparedCache
    cache = PreparedCache()
except ImportError:
    cache = None
def request():
    kw = {} if cache is None else {"prepared": cache.get(predictor, data, data.data_end, "month", None,
                                                         ForecastConfig())}
    return forecast_dict(outlook(predictor, data, data.data_end, 3, "month", config=ForecastConfig(), **kw))
times = []
for _ in range(repeats):
    t = time.perf_counter(); request(); times.append(time.perf_counter() - t)
t = time.perf_counter()
backtest(data, "quarter", 4, truth=truth, predictor=bt_predictor, config=ForecastConfig(n_sims=1000), oracle_sims=300)
print(json.dumps({"first": times[0], "warm_p50": statistics.median(times[1:]), "backtest": time.perf_counter() - t}))
"""


def run_speed(n_deals: int, reference: Path, repeats: int, cache: Path) -> dict:
    """Seconds per tree ({"this": ..., "reference": ...}) of the TIMING script, and the load average.
    Data and models are cached in `cache` (pickles shared with `bench_backtest_grid`)."""
    from features.synthetic import generate_data
    from features.timetravel import truncate_at
    from training.forecast.backtest import backtest_origins
    from training.train import TrainConfig, fit_predictor

    data, truth = cached(cache / f"data_{n_deals}_0.pkl", lambda: generate_data(n_deals, seed=0))
    predictor = cached(cache / f"model_{n_deals}_0_full.pkl", lambda: fit_predictor(data, TrainConfig()).predictor)
    first = backtest_origins(data, "quarter", 4)[0]
    bt_predictor = cached(cache / f"model_{n_deals}_0_{first.date()}.pkl",
                          lambda: fit_predictor(truncate_at(data, first), TrainConfig()).predictor)
    return _timed_in_trees(TIMING, (data, truth, predictor, bt_predictor, repeats), reference)


BACKTEST_TIMING = """
import json, pickle, sys, time
from training.forecast.backtest import backtest
from training.forecast.config import ForecastConfig
data, truth, predictor = pickle.load(open(sys.argv[1], "rb"))
t, cpu = time.perf_counter(), time.process_time()
backtest(data, "month", 12, truth=truth, predictor=predictor, config=ForecastConfig(n_sims=1000), oracle_sims=300)
print(json.dumps({"backtest": time.perf_counter() - t, "cpu": time.process_time() - cpu}))
"""


def run_backtest_speed(n_deals: int, reference: Path, cache: Path) -> dict:
    """Seconds of a 12-origin monthly backtest (with the oracle, as `leadscore backtest` runs
    on generated data) in the reference tree and in this one, the same data and model."""
    from features.synthetic import generate_data
    from features.timetravel import truncate_at
    from training.forecast.backtest import backtest_origins
    from training.train import TrainConfig, fit_predictor

    data, truth = cached(cache / f"data_{n_deals}_0.pkl", lambda: generate_data(n_deals, seed=0))
    first = backtest_origins(data, "month", 12)[0]
    predictor = cached(cache / f"model_{n_deals}_0_{first.date()}.pkl",
                       lambda: fit_predictor(truncate_at(data, first), TrainConfig()).predictor)
    return _timed_in_trees(BACKTEST_TIMING, (data, truth, predictor), reference)


def _timed_in_trees(script: str, inputs: tuple, reference: Path) -> dict:
    """`script` (its last stdout line: JSON) run on the pickled `inputs` in the reference tree,
    then in this one, each in its own process; the load average before and after."""
    out = {"load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "inputs.pkl"
        path.write_bytes(pickle.dumps(inputs))
        for name, tree in (("reference", reference), ("this", ROOT)):
            done = subprocess.run([sys.executable, "-c", script, str(path)], cwd=tree, capture_output=True,
                                  text=True, env={**os.environ, "PYTHONPATH": str(tree)}, check=True)
            out[name] = json.loads(done.stdout.strip().splitlines()[-1])
            print(name, out[name], flush=True)
    out["load_after"] = os.getloadavg()
    return out


def run_cli_speed(n_deals: int, reference: Path, repeats: int) -> dict:
    """Wall and CPU seconds of `leadscore forecast --periods 3 --freq month --out F.json`,
    alternately in the reference tree and in this one (`bench_cli_speed.time_commands`), on one
    generated dataset and one model made with this tree in a temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        timed = time_commands(prepared_folder(Path(tmp), n_deals), reference, repeats, ("forecast",))
    return {"load_before": timed["load_before"], "load_after": timed["load_after"], **timed["forecast"]}


def extra_speed_table(cli: dict | None, bt: dict | None, n_cli: int, n_bt: int, reference: Path) -> str:
    """`leadscore forecast` (target < 10 s) and the 12-origin monthly backtest (target < 3 min)."""
    lines = ["| step | target | reference wall s (CPU s) | this tree wall s (CPU s) | speed-up in CPU (reference / "
             "this) | load average before / after |", "|---|---|---:|---:|---:|---|"]
    if cli is not None:
        ref, new = (min(cli[k], key=lambda r: r["cpu"]) for k in ("reference", "this"))
        lines.append(f"| `leadscore forecast` on {n_cli:,} deals, 3 monthly periods, least CPU of {len(cli['this'])} "
                     f"| < 10 s | {ref['wall']:.1f} ({ref['cpu']:.1f}) | {new['wall']:.1f} ({new['cpu']:.1f}) | "
                     f"{ref['cpu'] / new['cpu']:.1f}x | {_load(cli)} |")
    if bt is not None:
        ref, new = bt["reference"], bt["this"]
        lines.append(f"| 12-origin monthly backtest on {n_bt:,} deals (with the oracle) | < 180 s | "
                     f"{ref['backtest']:.0f} ({ref['cpu']:.0f}) | {new['backtest']:.0f} ({new['cpu']:.0f}) | "
                     f"{ref['cpu'] / new['cpu']:.1f}x | {_load(bt)} |")
    return (f"Whole commands against the reference tree `{reference}` in the same run, one after the other (2 cores "
            f"shared with other jobs: wall seconds are inflated by the load and vary with it; the CPU seconds of the "
            f"process are the comparable figure, and on an idle core wall ~ CPU):\n\n" + "\n".join(lines))


def _load(timed: dict) -> str:
    return f"{timed['load_before'][0]:.1f} / {timed['load_after'][0]:.1f}"


def speed_table(speed: dict, n_deals: int, reference: Path) -> str:
    rows = [("first forecast (`leadscore forecast`'s computation, cold)", "first"),
            ("`/forecast` request once warm, p50", "warm_p50"), ("4-origin quarterly backtest", "backtest")]
    lines = [f"Generated data, {n_deals:,} deals, seed 0; forecast of 3 monthly periods at the data end, 2,000 "
             f"simulations; reference tree `{reference}` timed in the same run.", "",
             "| step | reference s | this tree s | speed-up (reference / this) |", "|---|---:|---:|---:|"]
    for label, key in rows:
        ref, new = speed["reference"][key], speed["this"][key]
        lines.append(f"| {label} | {ref:.2f} | {new:.2f} | {ref / new:.1f}x |")
    lo, hi = speed["load_before"], speed["load_after"]
    lines += ["", f"Load average (1, 5, 15 min) before {lo[0]:.1f}, {lo[1]:.1f}, {lo[2]:.1f}; after {hi[0]:.1f}, "
                  f"{hi[1]:.1f}, {hi[2]:.1f} on 2 cores: the machine was shared with other jobs, so absolute "
                  f"seconds are inflated; the ratio is the figure."]
    return "\n".join(lines)


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
    parser.add_argument("--speed-only", action="store_true", help="only the speed comparison")
    parser.add_argument("--speed-deals", type=int, default=20_000)
    parser.add_argument("--speed-repeats", type=int, default=6)
    parser.add_argument("--cli-repeats", type=int, default=3, help="`leadscore forecast` runs per tree (0: none)")
    parser.add_argument("--backtest-deals", type=int, default=100_000,
                        help="deals of the timed 12-origin monthly backtest (0: none)")
    parser.add_argument("--reference", type=Path, default=Path("/work/main"), help="the tree to compare with")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/leadscore_grid"), help="generated data, models")
    args = parser.parse_args(argv)
    if args.speed_only:
        args.cache.mkdir(parents=True, exist_ok=True)
        speed = run_speed(args.speed_deals, args.reference, args.speed_repeats, args.cache)
        text = speed_table(speed, args.speed_deals, args.reference)
        cli = run_cli_speed(args.speed_deals, args.reference, args.cli_repeats) if args.cli_repeats else None
        bt = run_backtest_speed(args.backtest_deals, args.reference, args.cache) if args.backtest_deals else None
        if cli or bt:
            text += "\n\n" + extra_speed_table(cli, bt, args.speed_deals, args.backtest_deals, args.reference)
        print(text)
        record("Forecast speed (accuracy slice)", text,
               f"python -m benchmarks.bench_forecast --speed-only --speed-deals {args.speed_deals} "
               f"--speed-repeats {args.speed_repeats} --cli-repeats {args.cli_repeats} "
               f"--backtest-deals {args.backtest_deals} --reference {args.reference}")
        return
    gen = run_generated(args.deals, args.origins, args.sims)
    (ROOT / "benchmarks" / "forecast_backtest_generated.json").write_text(json.dumps(gen, indent=1))
    body = [f"### Generated data: {args.deals:,} deals, seed 0, {args.origins} monthly origins "
            f"({gen['origins'][0][:10]} to {gen['origins'][-1][:10]})", "", table(gen), "",
            f"Model: {gen['strategy']}.", "",
            f"Wall time {gen['seconds'] / 60:.1f} min (training {(gen.get('training_seconds') or 0) / 60:.1f} min, "
            f"backtest {gen['backtest_seconds'] / 60:.1f} min; load average {os.getloadavg()[0]:.1f} on 2 cores), "
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

"""pandas in one process vs a Dask `LocalCluster`, step by step, on a partitioned dataset.

Run: `nice -n 10 python benchmarks/bench_dask.py --deals 1000000 --partitions 8 --workers 2
--folder /tmp/bench_dask [--no-pandas] [--no-generate]`. Each (step, mode) runs in its own
subprocess, so every peak is that step's alone: the main process's peak RSS, and on the
cluster each worker process's peak (sampled every 0.2 s with psutil) and the per-task
durations from the scheduler's task stream (what one partition costs, to extrapolate).

Steps: `generate` (`leadscore generate --partitions`: chunked, streamed), `fit` (the
FeatureBuilder: history tables as a per-partition reduction), `features` (fit + feature
rows and labels at four as-of dates: in pandas one table; on the cluster each partition's
task writes its rows into a Parquet dataset beside `--folder`), `score` (every deal open
at the data end, with explanations, by a predictor trained on 20k other deals), `train`
(`leadscore train`: pandas on the whole data; on the cluster `training.distributed_sample`,
the deals sampled to `--max-training-rows`; the time each of its steps started, and the
registered model's pickled size; MLflow: `$MLFLOW_TRACKING_URI`; `--steps train` to run it).
`--memory-limit 6GiB`: each local worker's limit (Dask's spill/pause fractions apply to it).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

AS_OF = ["2024-06-03", "2024-08-05", "2024-10-07", "2024-12-02"]
STEPS = ("fit", "features", "score")


class PeakSampler:
    """Peak RSS (MiB) of this process's descendants (the cluster's worker processes), by pid."""

    def __init__(self, every_s: float = 0.2) -> None:
        self.every_s, self.peaks, self._stop = every_s, defaultdict(float), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            for child in me.children(recursive=True):
                try:
                    if "distributed" in " ".join(child.cmdline()) or child.name().startswith("python"):
                        self.peaks[child.pid] = max(self.peaks[child.pid], child.memory_info().rss / 2**20)
                except psutil.Error:
                    pass
            time.sleep(self.every_s)

    def __enter__(self) -> "PeakSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def peak_main_mib() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_step(step: str, mode: str, folder: Path, workers: int, until: float | None = None,
             memory_limit: str = "auto", first: int | None = None, max_rows: int | None = None) -> dict:
    """One step in this process; returns its figures. On the cluster, a step still running
    at `until` (epoch seconds) is stopped there: its figures are then the tasks it finished."""
    from features.dataset import read_dataset

    predictor = pickle.loads((folder.parent / "predictor.pkl").read_bytes()) if step == "score" else None
    if mode == "pandas":
        t0 = time.perf_counter()
        if step == "train":  # stopped at `until` as on the cluster: the steps it reached
            out: dict = {}
            runner = threading.Thread(target=_record, args=(out, _train, None, folder, None), daemon=True)
            runner.start()
            runner.join(None if until is None else max(0.0, until - time.time()))
            figures = {"seconds": time.perf_counter() - t0, **out, "peak_main_mib": peak_main_mib()}
            if runner.is_alive():
                print(json.dumps({**figures, "stopped_at_deadline": True}, default=str), flush=True)
                os._exit(0)
            if "error" in out:
                raise out["error"]
            return figures
        data = read_dataset(folder)
        rows = _pandas_step(step, data, predictor)
        return {"seconds": time.perf_counter() - t0, "rows": rows, "peak_main_mib": peak_main_mib()}
    from distributed import get_task_stream

    from training.cluster import cluster_client

    t_start = time.perf_counter()
    with PeakSampler() as sampler, cluster_client(f"local:{workers}", memory_limit=memory_limit) as client:
        client.wait_for_workers(workers)
        started = time.perf_counter() - t_start
        baseline = dict(sampler.peaks)
        with get_task_stream(client) as recording:
            t0, out = time.perf_counter(), {}
            args = (_train, client, folder, max_rows) if step == "train" else \
                (_cluster_step, step, client, folder, predictor, first)
            runner = threading.Thread(target=_record, args=(out, *args), daemon=True)
            runner.start()
            runner.join(None if until is None else max(0.0, until - time.time()))
            seconds = time.perf_counter() - t0
            if runner.is_alive():  # stopped at the deadline: the tasks it finished, then leave at once
                recording.__exit__(None, None, None)
                print(json.dumps({**_cluster_figures(seconds, out, sampler, baseline, workers, started, recording),
                                  "stopped_at_deadline": True}), flush=True)
                os._exit(0)
        if "error" in out:
            raise out["error"]
    figures = _cluster_figures(seconds, out, sampler, baseline, workers, started, recording)
    return figures


def _record(out: dict, fn, *args) -> None:
    try:
        fn(*args, out)
    except Exception as exc:  # re-raised by the main thread
        out["error"] = exc


def _cluster_figures(seconds: float, out: dict, sampler: PeakSampler, baseline: dict, workers: int,
                     started: float, recording) -> dict:
    workers_mib = sorted((v for k, v in sampler.peaks.items() if k in baseline), reverse=True)[:workers]
    return {"seconds": seconds, **out, "peak_main_mib": peak_main_mib(), "cluster_start_s": started,
            "peak_worker_mib": workers_mib, "tasks": _task_costs(recording.data)}


def _pandas_step(step: str, data, predictor) -> int:
    from features.build import FeatureBuilder, features

    if step == "fit":
        return len(FeatureBuilder().fit(data).history_.outcomes.table)
    if step == "features":
        return len(features(data, AS_OF))
    return len(predictor.score(data, data.data_end, explain=True))


def _cluster_step(step: str, client, folder: Path, predictor, first: int | None, out: dict) -> None:
    """The step's figures into `out` as they come (what a deadline reports); `first`: the
    features step on the first partitions only (their deals: a hash sample of the data)."""
    from features.dataset import read_partition
    from training import distributed

    if step == "features":  # the fit included, as `leadscore features --cluster` runs it
        parts = distributed.partitions(client, folder)[:first]
        t0 = time.perf_counter()
        builder = distributed.fit_builder(client, parts, as_of=AS_OF)  # as `write_features` fits it
        out.update(client.submit(_fitted_figures, builder).result(), fit_seconds=time.perf_counter() - t0)
        written = distributed.write_feature_parts(client, parts, builder, AS_OF, folder.parent / "features.parquet")
        out.update(rows=written["rows"], files=written["files"], written_mib=written["bytes"] / 2**20)
        return
    if step == "fit":
        t0 = time.perf_counter()
        builder = distributed.fit_builder(client, distributed.partitions(client, folder))
        out.update(client.submit(_fitted_figures, builder).result(), fit_seconds=time.perf_counter() - t0)
        out["rows"] = out["closed_deals"]
        return
    end = read_partition(folder, 0).data_end
    out["rows"] = len(distributed.score_partitions(client, folder, predictor, end, True))


def _train(client, folder: Path, max_rows: int | None, out: dict) -> None:
    """`leadscore train` (pandas without `client`), each step's start (seconds) into `out`."""
    from features.build import build_training_set
    from features.dataset import read_dataset, read_truth
    from training import registry
    from training.cluster import TRAINING_ROWS_MAX
    from training.distributed_sample import cluster_inputs
    from training.run import train
    from training.train import TrainConfig

    t0, config, steps = time.perf_counter(), TrainConfig(), out.setdefault("steps", [])

    def step(name: str) -> None:
        steps.append([name, round(time.perf_counter() - t0, 1)])
        print(f"{time.strftime('%H:%M:%S')} {name}", file=sys.stderr, flush=True)

    if client is None:
        step("read the dataset")
        data, truth, whole = read_dataset(folder), read_truth(folder), {}
    else:
        step("deal sample")
        data, truth, whole = cluster_inputs(client, folder, config, max_rows or TRAINING_ROWS_MAX)
    inner = config.training_set or build_training_set

    def counted(sample, as_of):  # the snapshot rows the models train and are tested on
        X, labels, builder = inner(sample, as_of)
        out["snapshot_rows"] = len(X)
        return X, labels, builder

    config.training_set = counted
    summary = train(data, truth, experiment="bench-dask", model_name="bench-dask", config=config, step=step,
                    data_dir=folder, new_dataset=True, **whole)
    step("done")
    predictor, _version = registry.load_predictor("bench-dask", summary["model_version"])
    cp = summary["close_probability"]
    out.update(test_rows=cp.get("n"), auc=cp.get("auc"), brier=cp.get("brier"),
               messages=summary["messages"], model_pickle_mib=len(pickle.dumps(predictor, protocol=5)) / 2**20,
               deals_here=len(data.deals), folds=summary.get("folds"), history_sha256=_history_sha256(predictor))


def _history_sha256(predictor) -> str:
    """A digest of the registered model's history tables (rows and levels): equal models, equal digests."""
    history = predictor.builder.history_
    tables = [history.outcomes, history.dwell, history.open_load, *history.groups.values()]
    digest = hashlib.sha256(str(history.answers_from).encode())
    for table in (t for t in tables if t is not None):
        digest.update(pd.util.hash_pandas_object(table.table, index=False).to_numpy().tobytes())
        digest.update(pd.util.hash_pandas_object(table.levels.to_series(), index=False).to_numpy().tobytes())
    return digest.hexdigest()


def _fitted_figures(builder) -> dict:
    """Closed deals in the fitted builder's history (full builder only: a cut one has a row per
    as-of date), its history tables' size (with their levels) and the pickled builder's size."""
    history = builder.history_
    tables = [history.outcomes, history.dwell, history.open_load, *history.groups.values()]
    cut = history.as_of is not None
    return {"closed_deals": None if cut else len(history.outcomes.table), "history_cut_to_dates": cut,
            "history_mib": sum(t.table.memory_usage(deep=True).sum() + t.levels.memory_usage(deep=True)
                               for t in tables if t is not None) / 2**20,
            "builder_pickle_mib": len(pickle.dumps(builder, protocol=5)) / 2**20}


def _task_costs(stream: list[dict]) -> dict:
    """Per task name: count, median and max seconds (compute only)."""
    by_name = defaultdict(list)
    for task in stream:
        name = str(task["key"][0] if isinstance(task["key"], tuple) else task["key"]).rsplit("-", 1)[0]
        compute = [s for s in task["startstops"] if s["action"] == "compute"]
        by_name[name].append(sum(s["stop"] - s["start"] for s in compute))
    return {name: {"n": len(v), "median_s": float(np.median(v)), "max_s": float(np.max(v))}
            for name, v in by_name.items()}


def prepare(folder: Path, deals: int, partitions: int, generate: bool) -> dict:
    """The partitioned dataset (timed, peak memory) and the predictor `score` uses."""
    out = {}
    if generate:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", (
            "from benchmarks.bench_dask import peak_main_mib; "
            "from features.synthetic.chunked import generate_partitioned; "
            f"generate_partitioned({str(folder)!r}, {deals}, {partitions}, seed=0); print(peak_main_mib())")],
            capture_output=True, text=True, check=True, env=_env())
        out["generate"] = {"seconds": time.perf_counter() - t0, "peak_main_mib": float(proc.stdout.split()[-1])}
    model = folder.parent / "predictor.pkl"
    if not model.exists():
        from features.synthetic import generate_data
        from training.train import TrainConfig, fit_predictor

        small, _ = generate_data(20_000, seed=1)
        model.write_bytes(pickle.dumps(fit_predictor(small, TrainConfig()).predictor))
    return out


def _env() -> dict:
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _epoch_today(hh_mm: str) -> float:
    """Today's HH:MM UTC as epoch seconds."""
    import datetime as dt

    now = dt.datetime.now(dt.timezone.utc)
    hour, minute = (int(x) for x in hh_mm.split(":"))
    return now.replace(hour=hour, minute=minute, second=0, microsecond=0).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deals", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/bench_dask/data"))
    parser.add_argument("--no-pandas", action="store_true")
    parser.add_argument("--no-generate", action="store_true")
    parser.add_argument("--steps", default=",".join(STEPS))
    parser.add_argument("--out", type=Path, default=None, help="JSON of all figures")
    parser.add_argument("--memory-limit", default="auto", help="each local worker's, e.g. 6GiB")
    parser.add_argument("--first-partitions", type=int, default=None,
                        help="features step on the first K partitions only (per-partition costs of a big dataset)")
    parser.add_argument("--until", default=None, help="HH:MM (UTC): stop a cluster step still running then")
    parser.add_argument("--max-training-rows", type=int, default=None, help="the train step on the cluster")
    parser.add_argument("--step", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:  # a child: one step, figures on stdout
        until = None if args.until is None else _epoch_today(args.until)
        print(json.dumps(run_step(args.step, args.mode, args.folder, args.workers, until, args.memory_limit,
                                    args.first_partitions, args.max_training_rows)))
        return
    args.folder.parent.mkdir(parents=True, exist_ok=True)
    results = {"deals": args.deals, "partitions": args.partitions, "workers": args.workers,
               "load_before": os.getloadavg(), **prepare(args.folder, args.deals, args.partitions,
                                                          not args.no_generate)}
    print(json.dumps(results), flush=True)
    for step in args.steps.split(","):
        for mode in (["cluster"] if args.no_pandas else ["pandas", "cluster"]):
            proc = subprocess.run([sys.executable, __file__, "--step", step, "--mode", mode, "--folder",
                                   str(args.folder), "--workers", str(args.workers), "--memory-limit", args.memory_limit]
                                  + ([] if args.until is None else ["--until", args.until])
                                  + ([] if args.max_training_rows is None else
                                     ["--max-training-rows", str(args.max_training_rows)]),
                                  capture_output=True, text=True, env=_env())
            figures = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else \
                {"error": proc.stderr.strip().splitlines()[-1:]}
            results[f"{step}/{mode}"] = {**figures, "load": os.getloadavg()}
            print(step, mode, json.dumps(results[f"{step}/{mode}"]), flush=True)
            if args.out:
                args.out.write_text(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

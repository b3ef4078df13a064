"""A monitor run on a generated history with a regime change (RESULTS.md "Monitoring").

    python -m benchmarks.bench_monitor --data DIR --train-until 2024-06-01 --out monitor.json

DIR is `leadscore generate ... --regime-change DATE` output. The model is trained on the
history as known at --train-until (`features.timetravel.truncate_at`) into a throwaway
MLflow store and score store under --work; every week from then to the data end its
champion scores the deals open that Monday (what a weekly `leadscore score` cron does)
and logs the scores; then the monitor reads the log against the full history.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--train-until", required=True)
    parser.add_argument("--work", default="/tmp/leadscore-bench-monitor")
    parser.add_argument("--out", default="monitor.json")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    os.environ["LEADSCORE_STORE_URL"] = f"sqlite:///{work / 'store.db'}"

    import pandas as pd

    from features.dataset import read_dataset
    from features.timetravel import truncate_at
    from training.monitoring.monitor import MonitorConfig, monitor_report
    from training.run import train
    from training.scoring import score, trend_and_log
    from training.store.connection import open_store

    data = read_dataset(args.data)
    timings = {}
    start = time.perf_counter()
    trained = train(truncate_at(data, args.train_until), experiment="bench-monitor", model_name="bench-monitor")
    timings["train_s"] = time.perf_counter() - start
    print(f"trained v{trained['model_version']} ({trained['alias']}) in {timings['train_s']:.0f} s")
    start = time.perf_counter()
    mondays = pd.date_range(pd.Timestamp(args.train_until), data.data_end - pd.Timedelta(days=1), freq="W-MON")
    for monday in mondays:
        frame = score(data, as_of=monday, explain=False, model_name="bench-monitor",
                      version=trained["model_version"])
        print(monday.date(), trend_and_log(frame, "bench-monitor", trained["model_version"])[1], flush=True)
    timings["score_and_log_s"] = time.perf_counter() - start
    start = time.perf_counter()
    store = open_store()
    report = monitor_report(store, data, MonitorConfig(model_name="bench-monitor"))
    store.close()
    timings["monitor_s"] = time.perf_counter() - start
    report["timings"] = timings
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(report["verdict"]["line"])
    print(json.dumps(timings))


if __name__ == "__main__":
    main()

"""The cost of the score log (and score trends) on `/score`'s request path.

    python -m benchmarks.bench_score_log --deals 4000 --repeats 200

In one process, alternating, the same requests go through `serving.request.score_request`
(what `/score` runs) with the service's `record` (queue the scores for the writer thread,
trends from the in-memory index) and with a no-op record; the writer thread writes to a
real SQLite store meanwhile. Reported: median latency of each and their ratio, per request size.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deals", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()

    import pandas as pd

    from features.synthetic import generate_data
    from serving.batching import ScoreBatcher
    from serving.request import score_request
    from serving.schemas import ScoreRequest
    from tests.payloads import payload_records
    from training.compiled import CompiledPredictor
    from training.monitoring.trend import TrendIndex
    from training.store.score_log import ScoreLog
    from training.train import TrainConfig, fit_predictor

    data, _ = generate_data(args.deals, seed=3)
    predictor = fit_predictor(data, TrainConfig(close_params={"learning_rate": 0.1},
                                                time_params={"learning_rate": 0.15})).predictor
    model = CompiledPredictor.compile(predictor)
    model.warm()
    folder = Path(tempfile.mkdtemp(prefix="bench-score-log-"))
    score_log, index = ScoreLog(f"sqlite:///{folder / 'store.db'}"), TrendIndex()

    def record(scored):
        score_log.submit(scored, "leadscore", 1)
        return index.observe(scored)

    as_of = data.data_end - pd.Timedelta(days=30)
    pool = list(ScoreRequest.model_validate({"deals": payload_records(data, as_of)}).deals)
    rows = []
    for size in (1, 10, 100):
        deals = pool[:size]
        batcher = ScoreBatcher(model)
        times = {"with": [], "without": []}

        async def run(rec) -> float:
            start = time.perf_counter()
            response = await score_request(model, batcher, deals, as_of, "path", 1, record=rec)
            assert response.status_code == 200
            return time.perf_counter() - start

        for _ in range(args.repeats):
            times["without"].append(asyncio.run(run(lambda _s: None)))
            times["with"].append(asyncio.run(run(record)))
        med = {k: statistics.median(v) * 1000 for k, v in times.items()}
        rows.append((size, med["without"], med["with"], med["with"] / med["without"]))
    score_log.close()
    print("| deals per request | median ms, no log | median ms, log + trend | ratio |")
    print("|---:|---:|---:|---:|")
    for size, without, with_, ratio in rows:
        print(f"| {size} | {without:.2f} | {with_:.2f} | {ratio:.3f} |")
    print(f"scores written by the writer thread: {score_log.status()}")


if __name__ == "__main__":
    main()

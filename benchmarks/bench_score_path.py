"""CPU time of `/score`'s in-process path, without the HTTP server: for a busy machine,
where wall-clock latencies say more about the neighbours than about the code.

    python -m benchmarks.bench_score_path [--predictor FILE.pkl] [--rounds 3]

Runs the request path the service runs after BentoML has read the body: the body read
into columns (`serving.columnar.decode_score`; `ScoreRequest` validation from the JSON
bytes when it is small or not clean), `serving.request.score_request` (checks, features, scores,
explanations, warnings, each deal's trend from the scores before: `TrendIndex.observe`, as
the service records them; the score log's writer thread is left out) and the response JSON,
on the small generated data and predictor of tests/models_cache.py (trained once and kept
in --predictor; or any pickled (predictor, data), e.g. the demo champion). Reports the
median over rounds of the per-round p50 of process CPU time (all threads) for one deal and
for 1,000 deals with explanations. Prints figures; nothing is recorded or asserted. Run it
from two source trees (PYTHONPATH) to compare a change with its parent in one session.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import pickle
import time
from pathlib import Path

import numpy as np
import pandas as pd

from serving.batching import ScoreBatcher
from serving.columnar import COLUMNAR_BODY_BYTES, decode_score
from serving.request import score_request
from serving.schemas import ScoreRequest
from tests.payloads import payload_records
from training.compiled import CompiledPredictor
from training.monitoring.trend import TrendIndex


def load(path: Path):
    """(predictor, data) of tests/models_cache.py, trained once and pickled to `path`."""
    if path.exists():
        return pickle.loads(path.read_bytes())
    from tests.models_cache import small_data, small_predictor

    found = (small_predictor(), small_data()[0])
    path.write_bytes(pickle.dumps(found))
    return found


def cpu_ms(loop, model: CompiledPredictor, batcher: ScoreBatcher, body: bytes, n: int,
           trends: TrendIndex) -> list[float]:
    async def one_request():
        columnar = decode_score(body, model.meta) if len(body) >= COLUMNAR_BODY_BYTES else None  # as the service
        fields = columnar or dict(ScoreRequest.model_validate_json(body))
        return await score_request(model, batcher, fields["deals"], pd.Timestamp(fields["as_of"]),
                                   fields.get("explain", True), 1, record=trends.observe)
    out = []
    for _ in range(n):
        started = time.process_time()
        loop.run_until_complete(one_request())
        out.append((time.process_time() - started) * 1000)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictor", type=Path, default=Path("small_predictor.pkl"))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    predictor, data = load(args.predictor)
    model = CompiledPredictor.compile(predictor)
    model.warm()
    as_of = data.data_end - pd.Timedelta(days=90)
    deals = payload_records(data, as_of)
    many = [dict(d, deal_id=f"{d['deal_id']}-{i}") for i, d in enumerate((deals * (1000 // len(deals) + 1))[:1000])]
    bodies = {"1 deal": (deals[:1], 200), "1,000 deals": (many, 8)}
    loop = asyncio.new_event_loop()
    batcher = ScoreBatcher(model)
    trends = TrendIndex()
    p50 = {name: [] for name in bodies}
    for _ in range(args.rounds):
        for name, (chosen, n) in bodies.items():
            body = json.dumps({"deals": chosen, "as_of": as_of.isoformat()}, default=str).encode()
            p50[name].append(float(np.median(cpu_ms(loop, model, batcher, body, n, trends))))
    print(json.dumps({name: round(float(np.median(v)), 2) for name, v in p50.items()}))


if __name__ == "__main__":
    main()

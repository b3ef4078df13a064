"""`leadscore generate --partitions P`: a history too large for one process, generated in
independent chunks of deals and streamed into a partitioned dataset (`features.partitions`).

Every chunk draws its deals from the same population (owners, teams, accounts: one per
run, `make_population`) with its own seeds, `SeedSequence([seed, 0, chunk + 1])`, so the
output is a function of (seed, deals, chunk size) and differs from the single-file output
of the same seed (which draws all deals from `SeedSequence([seed, 0])`); deal ids run
D...1 to D...N over the chunks in order. A chunk is validated alone (a reject is a
generator bug), then its rows go to their hash partitions and its truth rows to
`truth/truth.parquet` (one row group per chunk); peak memory is one chunk's.
"""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from features.dataset import staged_dataset, write_meta
from features.partitions import PartitionWriter
from features.synthetic.generator import DealChunk, _accounts_frame, generate_raw, make_params, validated
from features.synthetic.population import make_population
from features.validation import validate

CHUNK_DEALS = 200_000  # ~0.7 GiB peak per chunk while generating


def generate_partitioned(out_dir: str | Path, n_deals: int, partitions: int, seed: int = 0,
                         start: str = "2023-01-01", months: int = 24, chunk_deals: int = CHUNK_DEALS) -> dict:
    """Write `n_deals` generated deals as `partitions` hash partitions (+ truth/); returns counts."""
    p = make_params(n_deals, seed, start, months)
    population = make_population(p)
    counts = {"deals": 0, "won": 0, "lost": 0, "open": 0, "events": 0, "activities": 0}
    with staged_dataset(out_dir) as folder:
        writer = PartitionWriter(folder, partitions)
        (folder / "truth").mkdir()
        truth_writer = None
        meta = None
        for index, first in enumerate(range(0, p.n_deals, chunk_deals)):
            chunk = DealChunk(index=index, first=first, n=min(chunk_deals, p.n_deals - first), population=population)
            raw, truth = generate_raw(p, chunk=chunk)
            data = validated(raw, p)
            writer.add({"deals": data.deals, "stage_events": data.stage_events, "activities": data.activities})
            arrow = pa.Table.from_pandas(truth, preserve_index=False)  # its metadata keeps attrs["params"]
            truth_writer = truth_writer or pq.ParquetWriter(folder / "truth" / "truth.parquet", arrow.schema)
            truth_writer.write_table(arrow.cast(truth_writer.schema))
            _count(counts, data)
            meta = data.meta
        writer.close()
        truth_writer.close()
        accounts = validate(raw["deals"].iloc[:0], meta, accounts=_accounts_frame(p)).data.accounts
        accounts.to_parquet(folder / "accounts.parquet", index=False)
        write_meta(folder, meta)
        (folder / "truth" / "params.json").write_text(json.dumps(p.to_dict(), indent=2))
    return {**counts, "accounts": len(accounts), "partitions": int(partitions), "chunks": index + 1,
            "data_end": str(meta.data_end)}


def _count(counts: dict, data) -> None:
    outcome = data.deals["outcome"]
    counts["deals"] += len(data.deals)
    counts["won"] += int((outcome == "won").sum())
    counts["lost"] += int((outcome == "lost").sum())
    counts["open"] += int(outcome.isna().sum())
    counts["events"] += len(data.stage_events)
    counts["activities"] += len(data.activities)

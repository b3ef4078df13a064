"""Canonical tables partitioned by a hash of `deal_id`, for datasets one process cannot hold.

Layout inside a dataset folder (beside meta.json and rejects.csv, see `features.dataset`):
`partitions.json` ({"partitions": P, "key": "deal_id", "hash": ...}), then per table
`deals/part-00000.parquet` ... `deals/part-{P-1}.parquet`, the same for `stage_events`
and `activities`: a deal, its stage events and its activities are always in the
partition of the same number (`partition_of`). `accounts.parquet` stays one file (it is
keyed by account, not by deal, and small). Every partition file exists, possibly empty,
so partition i of every table can be read alone (`read_partition_tables`) and a
`dask.dataframe` has one partition per file (`dask_table`).

`PartitionWriter` streams chunks of rows into the partition files (one Parquet row group
per chunk and partition), so a generator or an ingest never holds all rows at once.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.schema import CanonicalData

PARTITION_FILE = "partitions.json"
PARTITIONED_TABLES = ("deals", "stage_events", "activities")
HASH = "pandas.util.hash_array(deal_id as str, default key) % partitions"


def partition_of(deal_id: pd.Series | np.ndarray, partitions: int) -> np.ndarray:
    """The partition number of each deal id: a stable hash (the same in every process and
    release of pandas' hash_array with its default key), modulo the partition count."""
    ids = np.asarray(pd.Series(deal_id).astype("str").to_numpy(), dtype=object)
    return (pd.util.hash_array(ids) % np.uint64(partitions)).astype("int64")


def partition_file(folder: Path, table: str, i: int) -> Path:
    return folder / table / f"part-{i:05d}.parquet"


def partition_count(folder: str | Path) -> int | None:
    """P for a partitioned dataset folder, None for the single-file layout."""
    path = Path(folder) / PARTITION_FILE
    return int(json.loads(path.read_text())["partitions"]) if path.exists() else None


class PartitionWriter:
    """Appends rows of the partitioned tables to their partition files in `folder`."""

    def __init__(self, folder: Path, partitions: int) -> None:
        if int(partitions) < 1:
            raise ValueError(f"--partitions must be at least 1 (got {partitions})")
        self.folder, self.partitions = Path(folder), int(partitions)
        self._writers: dict[tuple[str, int], pq.ParquetWriter] = {}
        self._schemas: dict[str, pa.Schema] = {}

    def add(self, tables: dict[str, pd.DataFrame | None]) -> None:
        """Rows of some deals (`deals`) and of their child tables, split by partition."""
        for name in PARTITIONED_TABLES:
            frame = tables.get(name)
            if frame is None:
                continue
            arrow = pa.Table.from_pandas(frame, preserve_index=False)
            schema = self._schemas.setdefault(name, arrow.schema)
            arrow = arrow.cast(schema)
            part = partition_of(frame["deal_id"], self.partitions)
            order = np.argsort(part, kind="stable")
            bounds = np.searchsorted(part[order], np.arange(self.partitions + 1))
            for i in range(self.partitions):
                if bounds[i + 1] > bounds[i]:
                    self._writer(name, i).write_table(arrow.take(order[bounds[i]:bounds[i + 1]]))

    def _writer(self, name: str, i: int) -> pq.ParquetWriter:
        if (name, i) not in self._writers:
            partition_file(self.folder, name, i).parent.mkdir(parents=True, exist_ok=True)
            self._writers[name, i] = pq.ParquetWriter(partition_file(self.folder, name, i), self._schemas[name])
        return self._writers[name, i]

    def close(self) -> None:
        """Close every file; partitions that received no rows get an empty file (same schema)."""
        for name, schema in self._schemas.items():
            for i in range(self.partitions):
                self._writer(name, i)
        for writer in self._writers.values():
            writer.close()
        (self.folder / PARTITION_FILE).write_text(json.dumps(
            {"partitions": self.partitions, "key": "deal_id", "hash": HASH,
             "tables": sorted(self._schemas)}, indent=2))


def partitioned_tables(folder: str | Path) -> list[str]:
    """The tables a partitioned folder holds (deals always; the child tables when written)."""
    return list(json.loads((Path(folder) / PARTITION_FILE).read_text())["tables"])


def read_partition_tables(folder: str | Path, i: int, tables: tuple[str, ...] = PARTITIONED_TABLES
                          ) -> dict[str, pd.DataFrame | None]:
    """Partition i of each table (None for a table the folder does not hold)."""
    folder, held = Path(folder), partitioned_tables(folder)
    return {name: pd.read_parquet(partition_file(folder, name, i)) if name in held else None for name in tables}


def read_all_partitions(folder: str | Path) -> dict[str, pd.DataFrame | None]:
    """Every partition of each table, concatenated in partition order."""
    folder, held, n = Path(folder), partitioned_tables(folder), partition_count(folder)
    return {name: pd.concat([pd.read_parquet(partition_file(folder, name, i)) for i in range(n)],
                            ignore_index=True) if name in held else None for name in PARTITIONED_TABLES}


def dask_table(folder: str | Path, table: str):
    """A partitioned table as a `dask.dataframe`, one dask partition per hash partition."""
    import dask.dataframe as dd

    folder = Path(folder)
    files = [str(partition_file(folder, table, i)) for i in range(partition_count(folder))]
    return dd.from_map(pd.read_parquet, files, meta=pd.read_parquet(files[0]).iloc[:0])


def split_data(data: CanonicalData, partitions: int) -> list[CanonicalData]:
    """In-memory tables cut into `partitions` by the same hash as the files (each deal with
    its events and activities; accounts and meta shared)."""
    cut = {name: _split(getattr(data, name), partitions) for name in PARTITIONED_TABLES}
    meta = replace(data.meta, data_end=data.data_end)  # a partition's own tables do not set the end
    return [CanonicalData(meta=meta, accounts=data.accounts,
                          **{name: None if parts is None else parts[i] for name, parts in cut.items()})
            for i in range(partitions)]


def _split(frame: pd.DataFrame | None, partitions: int) -> list[pd.DataFrame] | None:
    if frame is None:
        return None
    part = partition_of(frame["deal_id"], partitions)
    return [frame.loc[part == i].reset_index(drop=True) for i in range(partitions)]

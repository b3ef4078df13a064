"""Reading and writing canonical tables in the `--data DIR` layout.

DIR/deals.parquet, DIR/stage_events.parquet, DIR/activities.parquet, DIR/accounts.parquet
(the optional ones only when present), DIR/rejects.csv, and DIR/meta.json (stage order,
attribute kinds, static flag, data end) so that every later command reads one folder.
With `partitions=P` the per-deal tables are Parquet datasets partitioned by a hash of
`deal_id` instead (`features.partitions`); `read_dataset` reads both layouts into the same
frames (partitioned: rows in partition order), `read_partition` one partition alone.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pandas as pd

from features.errors import DatasetNotFound
from features.partitions import (
    PARTITION_FILE,
    PARTITIONED_TABLES,
    PartitionWriter,
    partition_count,
    read_all_partitions,
    read_partition_tables,
)
from features.schema import CanonicalData, DatasetMeta, empty_rejects

OPTIONAL_TABLES = ("stage_events", "activities", "accounts")
DATASET_FILES = {"deals.parquet", *(f"{name}.parquet" for name in OPTIONAL_TABLES), "meta.json", "rejects.csv",
                 PARTITION_FILE, *PARTITIONED_TABLES}


def write_dataset(data: CanonicalData, out_dir: str | Path, rejects: pd.DataFrame | None = None,
                  partitions: int | None = None) -> Path:
    """Write canonical tables, meta.json and rejects.csv; returns the folder. `partitions`:
    the per-deal tables as P hash partitions of `deal_id` (`features.partitions`).

    Atomic: everything is written (and fsynced) into a sibling temporary folder that then
    replaces DIR, so a failure half-way leaves the old dataset as it was. Other entries of
    DIR (e.g. the generator's `truth/`) are carried over as hard links."""
    with staged_dataset(out_dir) as staging:
        if partitions is None:
            _write_tables(data, staging)
        else:
            data = replace(data, meta=replace(data.meta, data_end=data.data_end))  # fixed for every partition
            writer = PartitionWriter(staging, partitions)
            writer.add({name: getattr(data, name) for name in PARTITIONED_TABLES})
            writer.close()
            if data.accounts is not None:
                data.accounts.to_parquet(staging / "accounts.parquet", index=False)
        write_meta(staging, data.meta, rejects)
    return Path(out_dir)


@contextmanager
def staged_dataset(out_dir: str | Path, carry_over: bool = True) -> Iterator[Path]:
    """A temporary sibling folder to write a dataset into; on success it replaces `out_dir`
    (a folder or a file; with `carry_over`, entries of the old folder that are not dataset
    files are carried over), else it is removed."""
    out = Path(out_dir)
    _recover(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.writing-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()  # not mkdtemp: the folder keeps the usual permissions (umask), not 0700
    try:
        yield staging
        if carry_over and out.is_dir():
            _carry_over(out, staging)
        _sync(staging)
        _swap(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_tables(data: CanonicalData, folder: Path) -> None:
    data.deals.to_parquet(folder / "deals.parquet", index=False)
    for name in OPTIONAL_TABLES:
        table = getattr(data, name)
        if table is not None:  # absent: no file, so no stale table of an earlier run is read back
            table.to_parquet(folder / f"{name}.parquet", index=False)


def write_meta(folder: Path, meta: DatasetMeta, rejects: pd.DataFrame | None = None) -> None:
    """meta.json and rejects.csv of a dataset folder."""
    (folder / "meta.json").write_text(json.dumps(meta.to_dict(), indent=2))
    (empty_rejects() if rejects is None else rejects).to_csv(folder / "rejects.csv", index=False)


def _carry_over(old: Path, new: Path) -> None:
    """Entries of the old folder that are not dataset files, hard-linked into the new one."""
    for entry in old.iterdir():
        if entry.name in DATASET_FILES or (new / entry.name).exists():
            continue
        if entry.is_dir():
            shutil.copytree(entry, new / entry.name, copy_function=_link)
        else:
            _link(entry, new / entry.name)


def _link(source: str | Path, target: str | Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # a file system without hard links
        shutil.copy2(source, target)


def _swap(staging: Path, out: Path) -> None:
    """staging becomes out; the old folder is kept as `.NAME.previous` until the new one is
    in place (`_recover` puts it back if a crash came in between)."""
    previous = _previous(out)
    _remove(previous)
    if out.exists():
        os.replace(out, previous)
    os.replace(staging, out)
    _fsync_dir(out.parent)
    _remove(previous)


def _remove(path: Path) -> None:
    """A folder or a file, if there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _recover(out: Path) -> None:
    """A crash between the two renames of `_swap` left only `.NAME.previous`: restore it."""
    previous = _previous(out)
    if previous.exists() and not out.exists():
        os.replace(previous, out)


def _previous(out: Path) -> Path:
    return out.parent / f".{out.name}.previous"


def _sync(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_dataset(data_dir: str | Path) -> CanonicalData:
    """Read a folder written by `write_dataset` (or `leadscore ingest` / `generate`), in
    either layout (partitioned: every partition, concatenated in partition order)."""
    d, meta = _checked_folder(data_dir)
    if partition_count(d) is not None:
        return CanonicalData(meta=meta, accounts=_accounts(d), **read_all_partitions(d))
    tables = {name: pd.read_parquet(d / f"{name}.parquet") if (d / f"{name}.parquet").exists() else None
              for name in OPTIONAL_TABLES}
    return CanonicalData(deals=pd.read_parquet(d / "deals.parquet"), meta=meta, **tables)


def dataset_partitions(data_dir: str | Path) -> int:
    """How many partitions `read_partition` can read: P, or 1 for the single-file layout."""
    d, _ = _checked_folder(data_dir)
    return partition_count(d) or 1


def read_partition(data_dir: str | Path, i: int, deals_only: bool = False) -> CanonicalData:
    """Partition i alone: its deals, their events and activities, with the whole accounts
    table and meta (the single-file layout is its own one partition). `deals_only`: its
    deals and meta, nothing else read."""
    d, meta = _checked_folder(data_dir)
    n = partition_count(d)
    if n is None and i == 0:
        return CanonicalData(deals=pd.read_parquet(d / "deals.parquet"), meta=meta) if deals_only else read_dataset(d)
    if not 0 <= i < (n or 1):
        raise ValueError(f"{d} has {n or 1} partition(s): there is no partition {i}")
    if deals_only:
        return CanonicalData(meta=meta, **read_partition_tables(d, i, ("deals",)))
    return CanonicalData(meta=meta, accounts=_accounts(d), **read_partition_tables(d, i))


def _checked_folder(data_dir: str | Path) -> tuple[Path, DatasetMeta]:
    d = Path(data_dir)
    _recover(d)
    if not (d / "deals.parquet").exists() and partition_count(d) is None:
        raise DatasetNotFound(f"{d}/deals.parquet not found: point --data at a folder written by "
                              f"`leadscore ingest` or `leadscore generate`")
    if not (d / "meta.json").exists():
        raise DatasetNotFound(f"{d}/meta.json not found: re-run `leadscore ingest` for this folder")
    return d, DatasetMeta.from_dict(json.loads((d / "meta.json").read_text()))


def _accounts(d: Path) -> pd.DataFrame | None:
    return pd.read_parquet(d / "accounts.parquet") if (d / "accounts.parquet").exists() else None


def write_truth(out_dir: str | Path, truth: pd.DataFrame, params: dict) -> Path:
    """The generator's ground truth beside a dataset: truth/truth.parquet and the
    generator parameters as truth/params.json (benchmarks only; training never reads it)."""
    folder = Path(out_dir) / "truth"
    folder.mkdir(parents=True, exist_ok=True)
    truth.to_parquet(folder / "truth.parquet", index=False)
    (folder / "params.json").write_text(json.dumps(params, indent=2))
    return folder


def read_truth(data_dir: str | Path) -> pd.DataFrame | None:
    """Generator ground truth (benchmarks and the oracle metrics; no model learns from it), with the
    generator's parameters (`truth/params.json`) in `attrs["params"]` when its Parquet lacks them
    (folders written by `generate --partitions` before its Parquet kept them)."""
    path = Path(data_dir) / "truth" / "truth.parquet"
    if not path.exists():
        return None
    truth = pd.read_parquet(path)
    params = path.parent / "params.json"
    if "params" not in truth.attrs and params.exists():
        truth.attrs["params"] = json.loads(params.read_text())
    return truth

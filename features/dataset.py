"""Reading and writing canonical tables in the `--data DIR` layout.

DIR/deals.parquet, DIR/stage_events.parquet, DIR/activities.parquet, DIR/accounts.parquet
(the optional ones only when present), DIR/rejects.csv, and DIR/meta.json (stage order,
attribute kinds, static flag, data end) so that every later command reads one folder.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from features.errors import DatasetNotFound
from features.schema import CanonicalData, DatasetMeta, empty_rejects

OPTIONAL_TABLES = ("stage_events", "activities", "accounts")


def write_dataset(data: CanonicalData, out_dir: str | Path, rejects: pd.DataFrame | None = None) -> Path:
    """Write canonical tables, meta.json and rejects.csv; returns the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data.deals.to_parquet(out / "deals.parquet", index=False)
    for name in OPTIONAL_TABLES:
        table = getattr(data, name)
        path = out / f"{name}.parquet"
        if table is not None:
            table.to_parquet(path, index=False)
        elif path.exists():
            path.unlink()  # a stale table from an earlier run would be read back as current
    (out / "meta.json").write_text(json.dumps(data.meta.to_dict(), indent=2))
    (empty_rejects() if rejects is None else rejects).to_csv(out / "rejects.csv", index=False)
    return out


def read_dataset(data_dir: str | Path) -> CanonicalData:
    """Read a folder written by `write_dataset` (or `leadscore ingest` / `generate`)."""
    d = Path(data_dir)
    if not (d / "deals.parquet").exists():
        raise DatasetNotFound(f"{d}/deals.parquet not found: point --data at a folder written by "
                              f"`leadscore ingest` or `leadscore generate`")
    if not (d / "meta.json").exists():
        raise DatasetNotFound(f"{d}/meta.json not found: re-run `leadscore ingest` for this folder")
    meta = DatasetMeta.from_dict(json.loads((d / "meta.json").read_text()))
    tables = {name: pd.read_parquet(d / f"{name}.parquet") if (d / f"{name}.parquet").exists() else None
              for name in OPTIONAL_TABLES}
    return CanonicalData(deals=pd.read_parquet(d / "deals.parquet"), meta=meta, **tables)


def read_truth(data_dir: str | Path) -> pd.DataFrame | None:
    """Generator ground truth (benchmarks only; training never calls this)."""
    path = Path(data_dir) / "truth" / "truth.parquet"
    return pd.read_parquet(path) if path.exists() else None

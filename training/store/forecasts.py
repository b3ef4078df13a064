"""The forecast track record: every forecast made (CLI, HTTP), one row per period x group."""
from __future__ import annotations

import numpy as np
import pandas as pd
import sqlalchemy as sa

from features.errors import LeadscoreError
from training.store.connection import Store
from training.store.schema import NO_GROUP, forecasts as forecasts_table, utc_now
from training.store.transactions import writing

REQUIRED = ("as_of", "period_start", "period_end", "freq", "group_value", "p10", "p50", "p90",
            "model_name", "model_version")
OPTIONAL = ("group_column", "landing_p10", "landing_p50", "landing_p90", "closed_so_far", "data_fingerprint")
TIMESTAMPS = ("as_of", "period_start", "period_end")
COLUMNS = ("forecast_id", *REQUIRED[:4], "group_column", *REQUIRED[4:], *OPTIONAL[1:], "created_at")


def record_forecasts(store: Store, rows: pd.DataFrame) -> int:
    """Store the rows of one forecast (columns `REQUIRED`, any of `OPTIONAL`; period_start
    is the calendar start of the period even when as_of falls inside it; group_column is
    `NO_GROUP` when the forecast was not split) in one transaction; returns the count.
    A database error propagates (SQLAlchemy's): the caller decides whether a forecast
    that cannot be remembered is still shown."""
    missing = [c for c in REQUIRED if c not in rows.columns]
    if missing:
        raise LeadscoreError(f"record_forecasts: missing columns {missing}; rows need {list(REQUIRED)}")
    if rows.empty:
        return 0
    frame = rows.reindex(columns=[*REQUIRED, *OPTIONAL]).copy()
    frame["group_column"] = frame["group_column"].fillna(NO_GROUP).astype(str)
    frame["group_value"] = frame["group_value"].astype(str)
    for col in TIMESTAMPS:
        frame[col] = _naive_utc(frame[col])
    frame["created_at"] = utc_now()
    records = _plain_records(frame)
    with writing(store.engine) as conn:
        conn.execute(sa.insert(forecasts_table), records)
    return len(records)


def forecasts(store: Store, *, freq: str | None = None, group_column: str | None = None,
              model_name: str | None = None) -> pd.DataFrame:
    """Stored forecast rows (all, or of one freq / grouping column / model), oldest as-of
    first; columns `COLUMNS`."""
    query = sa.select(forecasts_table)
    for column, value in (("freq", freq), ("group_column", group_column), ("model_name", model_name)):
        if value is not None:
            query = query.where(forecasts_table.c[column] == value)
    query = query.order_by(forecasts_table.c.as_of, forecasts_table.c.forecast_id)
    with store.engine.connect() as conn:
        frame = pd.DataFrame(conn.execute(query).mappings().all(), columns=list(COLUMNS))
    for col in (*TIMESTAMPS, "created_at"):
        frame[col] = pd.to_datetime(frame[col])
    return frame


def _naive_utc(values: pd.Series) -> pd.Series:
    """Timestamps as naive UTC (tz-aware ones converted; naive ones taken as UTC)."""
    stamps = pd.to_datetime(values)
    if stamps.dt.tz is not None:
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    return stamps


def _plain_records(frame: pd.DataFrame) -> list[dict]:
    """Rows as dicts of plain Python values (None for missing), what every driver takes."""
    plain = frame.astype(object).where(frame.notna(), None)
    for col in plain.columns:
        if pd.api.types.is_datetime64_any_dtype(frame[col]):
            plain[col] = [None if v is None else v.to_pydatetime() for v in plain[col]]
        elif pd.api.types.is_float_dtype(frame[col]):
            plain[col] = [None if v is None else float(v) for v in plain[col]]
    records = plain.to_dict("records")
    return [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in r.items()} for r in records]

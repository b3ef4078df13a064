"""The forecast track record: every forecast made (CLI, HTTP), one row per period x group."""
from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from features.errors import LeadscoreError
from training.store.connection import Store
from training.store.schema import NO_GROUP, naive_utc, utc_now
from training.store.schema import forecasts as forecasts_table
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
        frame[col] = [naive_utc(value) for value in frame[col]]  # a few rows: periods x groups
    frame["created_at"] = utc_now()
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
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

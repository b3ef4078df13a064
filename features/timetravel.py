"""The dataset as it was known at a past date, for backtests and point-in-time tests.

`truncate_at(data, at)` keeps what a CRM export taken at `at` would have shown: deals
created by then, closes that had happened (later closes become open deals), the amount
last recorded by then, stage events and activities dated at or before `at`. Features
computed from the result at any T <= at equal those computed from the full data.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.arrays import event_arrays
from features.dates import parse_as_of
from features.errors import NotEnoughData
from features.schema import TIMESTAMP_DTYPE, CanonicalData
from features.snapshots import event_state, state_at


def truncate_at(data: CanonicalData, at) -> CanonicalData:
    """The canonical tables as known at `at` (meta.data_end = at).

    Amounts: when a deal's stage events carry amounts, deals.amount becomes the last
    amount recorded at or before `at` (NaN if none was recorded yet: the final amount
    would leak the future). A deal whose events carry no amount keeps deals.amount,
    the only value there is. deals.stage (a current-stage snapshot) becomes the last
    stage entered by `at` when there is a stage history.
    """
    at = parse_as_of(at, "cut-off date")
    if data.meta.static:
        raise NotEnoughData("a static lead export has no dates, so it cannot be cut at a date")
    deals = data.deals.loc[data.deals["created_at"] <= at].copy()
    later = ~(deals["closed_at"] <= at)
    deals["closed_at"] = deals["closed_at"].where(~later).astype(TIMESTAMP_DTYPE)
    deals["outcome"] = deals["outcome"].where(~later)
    ids = deals["deal_id"]
    events = _clip(data.stage_events, "entered_at", at, ids)
    activities = _clip(data.activities, "occurred_at", at, ids)
    if data.stage_events is not None:
        deals = _as_known(deals.reset_index(drop=True), data, events, at)
    meta = replace(data.meta, data_end=at)
    return CanonicalData(deals=deals.reset_index(drop=True), meta=meta, stage_events=events,
                         activities=activities, accounts=data.accounts)


def _clip(table: pd.DataFrame | None, time_col: str, at: pd.Timestamp, ids: pd.Series) -> pd.DataFrame | None:
    if table is None:
        return None
    kept = table.loc[(table[time_col] <= at).to_numpy(dtype=bool) & member(table["deal_id"], ids)]
    return kept.reset_index(drop=True)


def _as_known(deals: pd.DataFrame, data: CanonicalData, events: pd.DataFrame, at: pd.Timestamp) -> pd.DataFrame:
    """deals.amount and deals.stage as the snapshot engine's running state at `at` shows them."""
    stages = list(data.meta.stages)
    created = deals["created_at"].to_numpy(dtype=TIMESTAMP_DTYPE)
    running = event_state(created, event_arrays(deals["deal_id"], events, stages), len(stages))
    now = state_at(np.arange(len(deals)), np.full(len(deals), np.datetime64(at, "us")), running)
    if "amount" in data.stage_events and "amount" in deals:
        logged = member(deals["deal_id"], data.stage_events.loc[data.stage_events["amount"].notna(), "deal_id"])
        deals["amount"] = np.where(logged, now["event_amount"],
                                   deals["amount"].to_numpy(dtype="float64", na_value=np.nan))
    if "stage" in deals:  # the last stage entered by `at`; none for a deal without events by then
        entered = member(deals["deal_id"], events["deal_id"])
        names = np.asarray(stages, dtype=object)[now["stage_index"].astype("int64")]
        deals["stage"] = pd.Series(np.where(entered, names, None), index=deals.index).astype(deals["stage"].dtype)
    return deals


def member(values: pd.Series, ids: pd.Series) -> np.ndarray:
    """`values.isin(ids)` as a boolean array; pyarrow's hash lookup for string columns
    (pandas' isin on pyarrow strings converts every value to a Python object: ~50x slower)."""
    if isinstance(values.dtype, pd.StringDtype) and isinstance(ids.dtype, pd.StringDtype):
        found = pc.is_in(pa.array(values.array), value_set=pa.array(ids.array))
        return found.to_numpy(zero_copy_only=False).astype(bool)
    return values.isin(ids).to_numpy(dtype=bool)

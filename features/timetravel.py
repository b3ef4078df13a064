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

from features.errors import NotEnoughData
from features.schema import TIMESTAMP_DTYPE, CanonicalData


def truncate_at(data: CanonicalData, at) -> CanonicalData:
    """The canonical tables as known at `at` (meta.data_end = at).

    Amounts: when a deal's stage events carry amounts, deals.amount becomes the last
    amount recorded at or before `at` (NaN if none was recorded yet: the final amount
    would leak the future). A deal whose events carry no amount keeps deals.amount,
    the only value there is. deals.stage (a current-stage snapshot) becomes the last
    stage entered by `at` when there is a stage history.
    """
    at = _timestamp(at)
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
        deals = _amount_as_known(deals, data.stage_events, events)
        if "stage" in deals:
            deals["stage"] = _last_value(events, "stage", deals["deal_id"]).astype(deals["stage"].dtype)
    meta = replace(data.meta, data_end=at)
    return CanonicalData(deals=deals.reset_index(drop=True), meta=meta, stage_events=events,
                         activities=activities, accounts=data.accounts)


def _timestamp(at) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(at)
    except (ValueError, TypeError):
        raise NotEnoughData(f"'{at}' is not a date: use YYYY-MM-DD") from None
    if ts is pd.NaT:
        raise NotEnoughData("the cut-off date is empty: use YYYY-MM-DD")
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts


def _clip(table: pd.DataFrame | None, time_col: str, at: pd.Timestamp, ids: pd.Series) -> pd.DataFrame | None:
    if table is None:
        return None
    kept = table.loc[(table[time_col] <= at) & table["deal_id"].isin(ids)]
    return kept.reset_index(drop=True)


def _last_value(events: pd.DataFrame, column: str, deal_ids: pd.Series) -> pd.Series:
    """Last non-null `column` per deal in `events` (sorted by time), aligned with deal_ids."""
    known = events.loc[events[column].notna()].sort_values("entered_at", kind="stable")
    last = known.groupby("deal_id")[column].last()
    return pd.Series(last.reindex(deal_ids.to_numpy()).to_numpy(), index=deal_ids.index)


def _amount_as_known(deals: pd.DataFrame, all_events: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    if "amount" not in all_events or "amount" not in deals:
        return deals
    with_amounts = all_events.loc[all_events["amount"].notna(), "deal_id"].unique()
    logged = deals["deal_id"].isin(with_amounts).to_numpy()
    known = _last_value(events, "amount", deals["deal_id"]).to_numpy(dtype="float64", na_value=np.nan)
    deals["amount"] = np.where(logged, known, deals["amount"].to_numpy(dtype="float64", na_value=np.nan))
    return deals

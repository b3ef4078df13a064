"""Test helpers: canonical tables <-> request payloads.

`payload_records` turns canonical tables into the deals a client would send (for tests and
benchmarks that replay history over HTTP); `canonical_from_records` is the reference the
request path (`features.payload.payload_arrays`) is held equal to: the payload deals as
canonical tables, through the ingestion validator.
"""
from __future__ import annotations

import pandas as pd

from features.schema import ACTIVITY_COLUMNS, DEAL_OPTIONAL, EVENT_COLUMNS, CanonicalData, DatasetMeta, ValidationResult
from features.validation import validate

NESTED = ("stage_history", "activities")
DEAL_FIELDS = ["deal_id", "created_at", *[c for c in DEAL_OPTIONAL if c not in ("closed_at", "outcome", "stage")]]


def canonical_from_records(records: list[dict], meta: DatasetMeta) -> ValidationResult:
    """Validate payload deals (dicts with canonical deal fields, `stage`, optional
    `stage_entered_at`, `expected_close_date`, `stage_history`, `activities`)."""
    deals = _deals_frame(records, meta)
    if meta.static:  # a static lead export has no history: attributes only
        return validate(deals, meta)
    return validate(deals, meta, stage_events=_events_frame(records), activities=_activities_frame(records))


def _deals_frame(records: list[dict], meta: DatasetMeta) -> pd.DataFrame:
    present = set().union(*(r.keys() for r in records)) if records else set()
    cols = [c for c in DEAL_FIELDS + list(meta.attributes) if c in present]
    deals = pd.DataFrame({c: [r.get(c) for r in records] for c in cols}, index=pd.RangeIndex(len(records)))
    for name in meta.attributes:  # declared attributes missing from the payload are unknown, not errors
        if name not in deals:
            deals[name] = None
    if "stage" in present:
        deals["stage"] = [r.get("stage") for r in records]
    deals["closed_at"] = None
    deals["outcome"] = None
    return deals


def _events_frame(records: list[dict]) -> pd.DataFrame:
    cols = {c: [] for c in EVENT_COLUMNS}
    for rec in records:
        history = rec.get("stage_history") or []
        if history:
            rows = [{"deal_id": rec.get("deal_id"), **h} for h in history]
        elif rec.get("stage") is not None:
            rows = [{"deal_id": rec.get("deal_id"), "stage": rec.get("stage"),
                     "entered_at": rec.get("stage_entered_at") or rec.get("created_at"),
                     "amount": rec.get("amount"), "expected_close_date": rec.get("expected_close_date")}]
        else:
            continue
        for name, values in cols.items():
            values.extend(row.get(name) for row in rows)
    return pd.DataFrame(cols)


def _activities_frame(records: list[dict]) -> pd.DataFrame | None:
    if not any("activities" in rec for rec in records):
        return None  # no activity data at all: activity features are missing, not zero
    cols = {c: [] for c in ACTIVITY_COLUMNS}
    for rec in records:
        for act in rec.get("activities") or []:
            cols["deal_id"].append(rec.get("deal_id"))
            cols["occurred_at"].append(act.get("occurred_at"))
            cols["type"].append(act.get("type"))
    return pd.DataFrame(cols)


def payload_records(data: CanonicalData, as_of, deal_ids=None) -> list[dict]:
    """The inverse of `canonical_from_records`: deals open at `as_of` as request payload
    dicts, with only what was known at `as_of` (stage history and activities dated <= as_of,
    no outcome). For clients, tests and benchmarks that replay canonical tables over HTTP."""
    at = pd.Timestamp(as_of)
    deals = data.deals
    is_open = (deals["created_at"] <= at) & (deals["closed_at"].isna() | (deals["closed_at"] > at))
    if deal_ids is not None:
        is_open &= deals["deal_id"].isin(list(deal_ids))
    chosen = deals.loc[is_open].drop(columns=["closed_at", "outcome"], errors="ignore")
    ids = set(chosen["deal_id"])
    history = _children(data.stage_events, "entered_at", at, ids)
    acts = _children(data.activities, "occurred_at", at, ids)
    records = []
    for deal in _json_rows(chosen):
        rec = {k: v for k, v in deal.items() if v is not None}
        events = history.get(deal["deal_id"], [])
        rec["stage"] = events[-1]["stage"] if events else data.meta.stages[0]
        rec["stage_history"] = [{k: v for k, v in e.items() if v is not None and k != "deal_id"} for e in events]
        if data.activities is not None:
            rec["activities"] = [{k: v for k, v in a.items() if k != "deal_id"} for a in acts.get(deal["deal_id"], [])]
        records.append(rec)
    return records


def _children(table: pd.DataFrame | None, time_col: str, at: pd.Timestamp, ids: set) -> dict[str, list[dict]]:
    if table is None:
        return {}
    rows = table.loc[table["deal_id"].isin(ids) & (table[time_col] <= at)]
    out: dict[str, list[dict]] = {}
    for row in _json_rows(rows.sort_values(["deal_id", time_col], kind="stable")):
        out.setdefault(row["deal_id"], []).append(row)
    return out


def _json_rows(frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON-ready dicts: ISO timestamps, None for missing values."""
    frame = frame.copy()
    for col in frame.columns:
        if pd.api.types.is_datetime64_any_dtype(frame[col]):
            frame[col] = frame[col].dt.strftime("%Y-%m-%dT%H:%M:%S").astype(object)
    frame = frame.astype(object).where(frame.notna(), None)
    return frame.to_dict(orient="records")

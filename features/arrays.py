"""Deals with their stage events and activities as plain numpy arrays.

This is what the feature code computes on. Training builds it from canonical tables
(`DealArrays.from_canonical`, vectorised); serving builds it straight from request
payloads (`features.payload.payload_arrays`), so a one-deal request never pays pandas'
fixed cost per operation while both run the same feature functions on the result.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.errors import SchemaError
from features.schema import TIMESTAMP_DTYPE

NAT = np.datetime64("NaT", "us")
ALL_SEEN = np.datetime64(np.iinfo("int64").min + 1, "us")  # stage_seen_from of a deal whose every entry is observed


@dataclass
class DealArrays:
    """Per-deal arrays (position = deal) plus child rows pointing at a deal position.

    `fields` holds the raw categorical columns and declared attributes: object arrays of
    str/None (categoricals) or float64 (numeric attributes). `events` (stage_index,
    entered_at, amount, expected_close_date) and `activities` (occurred_at) carry a
    `deal` column of positions, -1 for rows of deals not in this set; unsorted.
    `activities` is None when activity data is unknown (not the same as none);
    `activity_known` marks, per deal, whose activities are known when only some are (a
    batch merged from requests with and without activity data).
    `stage_seen_from`: per deal, `features.snapshots.stage_seen_from` for a current-state
    export (stays entered before it have an unknown entry); None: every entry observed.
    """

    deal_id: np.ndarray
    created_at: np.ndarray
    amount: np.ndarray
    fields: dict[str, np.ndarray]
    events: dict[str, np.ndarray]
    activities: dict[str, np.ndarray] | None
    activity_known: np.ndarray | None = None
    stage_seen_from: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.deal_id)

    @classmethod
    def concat(cls, parts: list["DealArrays"]) -> "DealArrays":
        """Several sets of deals as one (positions renumbered), e.g. concurrent requests
        scored as a batch. All parts must carry the same `fields`."""
        if len(parts) == 1:
            return parts[0]
        offsets = np.cumsum([0] + [len(p) for p in parts[:-1]])
        fields = {name: np.concatenate([p.fields[name] for p in parts]) for name in parts[0].fields}
        events = {name: np.concatenate([_shift(p.events[name], k) if name == "deal" else p.events[name]
                                        for p, k in zip(parts, offsets)]) for name in parts[0].events}
        activities = known = None
        if any(p.activities is not None for p in parts):
            with_data = [p for p in parts if p.activities is not None]
            activities = {"deal": np.concatenate([_shift(p.activities["deal"], k) for p, k in zip(parts, offsets)
                                                  if p.activities is not None]),
                          "occurred_at": np.concatenate([p.activities["occurred_at"] for p in with_data])}
            known = np.concatenate([p.activity_known if p.activity_known is not None
                                    else np.full(len(p), p.activities is not None) for p in parts])
        seen = None if all(p.stage_seen_from is None for p in parts) else np.concatenate(
            [np.full(len(p), ALL_SEEN) if p.stage_seen_from is None else p.stage_seen_from for p in parts])
        return cls(deal_id=np.concatenate([p.deal_id for p in parts]),
                   created_at=np.concatenate([p.created_at for p in parts]),
                   amount=np.concatenate([p.amount for p in parts]), fields=fields, events=events,
                   activities=activities, activity_known=None if known is None or known.all() else known,
                   stage_seen_from=seen)

    @classmethod
    def from_canonical(cls, deals: pd.DataFrame, stage_events: pd.DataFrame | None,
                       activities: pd.DataFrame | None, stages: list[str], numeric: dict[str, bool],
                       stage_seen_from: np.ndarray | None = None) -> "DealArrays":
        """From checked canonical tables (`deals` with a RangeIndex and typed timestamps).
        `numeric`: field name -> whether it is a number (else a category, kept as text)."""
        ids = deals["deal_id"]
        fields = {}
        for name, is_number in numeric.items():
            if name in deals:
                fields[name] = pd.to_numeric(deals[name], errors="coerce").to_numpy(dtype="float64", na_value=np.nan) \
                    if is_number else _object_strings(deals[name])
        return cls(deal_id=ids.to_numpy(dtype=object), created_at=deals["created_at"].to_numpy(dtype=TIMESTAMP_DTYPE),
                   amount=deals["amount"].to_numpy(dtype="float64", na_value=np.nan), fields=fields,
                   events=event_arrays(ids, stage_events, stages),
                   activities=None if activities is None else {
                       "deal": deal_positions(ids, activities["deal_id"]),
                       "occurred_at": activities["occurred_at"].to_numpy(dtype=TIMESTAMP_DTYPE)},
                   stage_seen_from=stage_seen_from)


def _shift(deal: np.ndarray, offset: int) -> np.ndarray:
    return np.where(deal >= 0, deal + offset, -1)  # -1 (another set's deal) stays -1


def deal_positions(deal_ids: pd.Series, ids: pd.Series) -> np.ndarray:
    """Row position in `deal_ids` of each id (-1 when unknown); pyarrow's hash lookup
    (pandas' indexer on pyarrow strings converts every value to a Python object)."""
    found = pc.index_in(pa.array(ids.astype("string").array), value_set=pa.array(deal_ids.astype("string").array))
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype("int64")


def _object_strings(column: pd.Series) -> np.ndarray:
    """A column as an object array of str, None for missing."""
    text = column if isinstance(column.dtype, pd.StringDtype) else column.astype("string")
    return text.astype(object).where(text.notna(), None).to_numpy(dtype=object)


def event_arrays(ids: pd.Series, stage_events: pd.DataFrame | None, stages: list[str]) -> dict[str, np.ndarray]:
    if stage_events is None or stage_events.empty:
        return empty_events()
    se = stage_events
    stage = pd.Index(stages).get_indexer(se["stage"].astype("string"))
    if (stage < 0).any():
        bad = sorted(set(se["stage"][stage < 0].astype("string").fillna("<empty>")))[:5]
        raise SchemaError(f"stage_events has stages {bad} not in the stage order {stages}: add them to "
                          f"the mapping's 'stages' list, or run the tables through features.validation.validate")
    n = len(se)
    return {"deal": deal_positions(ids, se["deal_id"]), "stage_index": stage.astype("int64"),
            "entered_at": se["entered_at"].to_numpy(dtype=TIMESTAMP_DTYPE),
            "amount": se["amount"].to_numpy(dtype="float64", na_value=np.nan) if "amount" in se else np.full(n, np.nan),
            "expected_close_date": se["expected_close_date"].to_numpy(dtype=TIMESTAMP_DTYPE)
            if "expected_close_date" in se else np.full(n, NAT)}


def empty_events() -> dict[str, np.ndarray]:
    return {"deal": np.zeros(0, "int64"), "stage_index": np.zeros(0, "int64"),
            "entered_at": np.zeros(0, TIMESTAMP_DTYPE), "amount": np.zeros(0, "float64"),
            "expected_close_date": np.zeros(0, TIMESTAMP_DTYPE)}


SMALL = 20_000  # a request's values: a dict lookup, no pandas indexer (~0.1 ms fixed cost, then an Arrow conversion)


def level_codes(levels: pd.Index) -> dict:
    """level -> code: the lookup `encode` takes for request-sized inputs."""
    return {level: i for i, level in enumerate(levels.tolist())}


def encode(levels: pd.Index, values: np.ndarray | None, n: int, codes: dict | None = None) -> np.ndarray:
    """Codes of `values` (object array of str/None) among `levels`; -1 for missing or unseen.
    `codes`: `level_codes(levels)` made once (the serving object keeps them), used for
    request-sized inputs instead of pandas' indexer (the same codes, tested)."""
    if values is None:
        return np.full(n, -1, dtype="int64")
    if codes is None or len(values) > SMALL:
        return levels.get_indexer(values).astype("int64")
    return np.fromiter(map(codes.get, values, repeat(-1)), dtype="int64", count=len(values))

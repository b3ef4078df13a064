"""The canonical data contract: column sets, dtypes, reject reasons and the tables'
containers (`CanonicalData`, `DatasetMeta`). The validator that enforces it is
`features.validation`; cell parsing is `features.parsing`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from features.errors import NotEnoughData

TIMESTAMP_DTYPE = "datetime64[us]"  # tz-naive UTC everywhere; merge_asof needs one dtype

DEAL_REQUIRED = ["deal_id", "created_at"]
DEAL_OPTIONAL = ["amount", "closed_at", "outcome", "owner", "team", "region", "product",
                 "source", "segment", "account_id", "stage"]
DEAL_CATEGORICAL = ["owner", "team", "region", "product", "source", "segment", "account_id"]
EVENT_COLUMNS = ["deal_id", "stage", "entered_at", "amount", "expected_close_date"]
ACTIVITY_COLUMNS = ["deal_id", "occurred_at", "type"]
REJECT_COLUMNS = ["table", "row", "deal_id", "reason", "detail"]
OUTCOMES = ("won", "lost")


class Reason:
    """Reject reasons; one short code each so counts are easy to read and test."""

    DUPLICATE_ID = "duplicate_id"
    MISSING_REQUIRED = "missing_required_field"
    UNPARSEABLE_DATE = "unparseable_date"
    UNPARSEABLE_NUMBER = "unparseable_number"
    CLOSE_BEFORE_CREATE = "close_before_create"
    EVENT_BEFORE_CREATE = "event_before_create"
    EVENT_AFTER_CLOSE = "event_after_close"
    UNKNOWN_DEAL = "unknown_deal"
    NEGATIVE_AMOUNT = "negative_amount"
    OUTCOME_WITHOUT_CLOSE = "outcome_without_close_date"
    CLOSE_WITHOUT_OUTCOME = "close_date_without_outcome"
    INVALID_OUTCOME = "invalid_outcome"
    UNKNOWN_STAGE = "unknown_stage"
    DEAL_REJECTED = "parent_deal_rejected"
    DATE_OUT_OF_RANGE = "date_out_of_range"
    NUMBER_OUT_OF_RANGE = "number_out_of_range"
    CONTRADICTS_OUTCOME = "contradicts_outcome"  # a won/lost history row the deal's outcome denies


@dataclass
class DatasetMeta:
    """What a dataset needs besides its rows: stage order, attribute kinds, horizon."""

    stages: list[str]
    attributes: dict[str, str] = field(default_factory=dict)  # name -> categorical|numeric
    static: bool = False  # lead export without dates: one row per lead, attributes only
    data_end: pd.Timestamp | None = None  # censoring time: outcomes after it are unknown
    name: str = "dataset"
    # "recorded": stage_events is the CRM's stage history; "snapshots": a current-state export's
    # stages, each known only from the export that showed it (features.snapshot_exports)
    stage_history: str = "recorded"

    def to_dict(self) -> dict:
        return {"stages": list(self.stages), "attributes": dict(self.attributes),
                "static": self.static, "name": self.name,
                "data_end": None if self.data_end is None else self.data_end.isoformat(),
                "stage_history": self.stage_history}

    @classmethod
    def from_dict(cls, d: dict) -> "DatasetMeta":
        end = d.get("data_end")
        return cls(stages=list(d["stages"]), attributes=dict(d.get("attributes") or {}),
                   static=bool(d.get("static", False)), name=d.get("name", "dataset"),
                   data_end=None if end is None else pd.Timestamp(end),
                   stage_history=d.get("stage_history", "recorded"))


@dataclass
class CanonicalData:
    """The four canonical tables (three optional) plus their metadata."""

    deals: pd.DataFrame
    meta: DatasetMeta
    stage_events: pd.DataFrame | None = None
    activities: pd.DataFrame | None = None
    accounts: pd.DataFrame | None = None

    @property
    def data_end(self) -> pd.Timestamp:
        """Censoring time: the declared end, else the latest timestamp in the tables."""
        if self.meta.data_end is not None:
            return pd.Timestamp(self.meta.data_end)
        stamps = [self.deals["created_at"].max(), self.deals["closed_at"].max()]
        if self.stage_events is not None and len(self.stage_events):
            stamps.append(self.stage_events["entered_at"].max())
        if self.activities is not None and len(self.activities):
            stamps.append(self.activities["occurred_at"].max())
        known = [s for s in stamps if pd.notna(s)]
        if not known:
            what = "is a static lead export" if self.meta.static else "has no dated row"
            raise NotEnoughData(f"dataset '{self.meta.name}' {what}: no data end, so nothing that needs a date "
                                f"(as-of, forecast, backtest) can run on it; `leadscore train` and `score` can")
        return max(known)


@dataclass
class ValidationResult:
    data: CanonicalData
    rejects: pd.DataFrame

    def counts(self) -> pd.Series:
        """Rejected rows per (table, reason)."""
        if self.rejects.empty:
            return pd.Series(dtype="int64")
        return self.rejects.groupby(["table", "reason"]).size().sort_values(ascending=False)


_EMPTY_REJECTS = pd.DataFrame({c: pd.Series(dtype="int64" if c == "row" else "str") for c in REJECT_COLUMNS})


def empty_rejects() -> pd.DataFrame:
    return _EMPTY_REJECTS.copy()  # built once: a request validates several clean tables

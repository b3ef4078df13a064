"""The canonical data contract: column sets, dtypes, and the validator that splits
raw tables into clean tables plus a rejects table (nothing is dropped silently).

Every source (CSV/Parquet/SQL export through a mapping, the synthetic generator, a
serving payload) ends up here before any feature is computed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from features.errors import SchemaError

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


@dataclass(frozen=True)
class Plausible:
    """Bounds of believable values (ingestion checks them; see the mapping's `plausible`):
    dates within [earliest, latest]; amounts and numeric attributes finite and at most
    max_amount / max_number in size."""

    earliest: pd.Timestamp
    latest: pd.Timestamp
    max_amount: float
    max_number: float

    def reject_dates(self, r: "_Rejector", **dates: pd.Series) -> None:
        for col, parsed in dates.items():
            outside = (parsed < self.earliest) | (parsed > self.latest)
            r.reject(outside, Reason.DATE_OUT_OF_RANGE, lambda col=col, parsed=parsed: f"{col}=" + parsed.astype(
                "string") + f" (plausible: {self.earliest:%Y-%m-%d} .. {self.latest:%Y-%m-%d})")

    def reject_numbers(self, r: "_Rejector", col: str, parsed: pd.Series, bound: float) -> None:
        r.reject(parsed.abs() > bound, Reason.NUMBER_OUT_OF_RANGE,
                 lambda: f"{col}=" + parsed.astype("string") + f" (plausible: at most {bound:g} in size)")


@dataclass
class DatasetMeta:
    """What a dataset needs besides its rows: stage order, attribute kinds, horizon."""

    stages: list[str]
    attributes: dict[str, str] = field(default_factory=dict)  # name -> categorical|numeric
    static: bool = False  # lead export without dates: one row per lead, attributes only
    data_end: pd.Timestamp | None = None  # censoring time: outcomes after it are unknown
    name: str = "dataset"

    def to_dict(self) -> dict:
        return {"stages": list(self.stages), "attributes": dict(self.attributes),
                "static": self.static, "name": self.name,
                "data_end": None if self.data_end is None else self.data_end.isoformat()}

    @classmethod
    def from_dict(cls, d: dict) -> "DatasetMeta":
        end = d.get("data_end")
        return cls(stages=list(d["stages"]), attributes=dict(d.get("attributes") or {}),
                   static=bool(d.get("static", False)), name=d.get("name", "dataset"),
                   data_end=None if end is None else pd.Timestamp(end))


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
        return max(s for s in stamps if pd.notna(s))


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


def parse_timestamps(values: pd.Series, fmt: str | None = None, dayfirst: bool = False
                     ) -> tuple[pd.Series, pd.Series]:
    """Parse to tz-naive UTC timestamps. Returns (parsed, bad) where `bad` marks
    non-empty cells that could not be parsed (empty cells are NaT, not bad)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values
    elif values.isna().all():  # e.g. closed_at of open deals in a payload: nothing to parse
        return pd.Series(pd.NaT, index=values.index, dtype=TIMESTAMP_DTYPE), pd.Series(False, index=values.index)
    else:
        text = values.astype("string").str.strip()
        text = text.mask(text == "")
        if fmt:
            parsed = pd.to_datetime(text, format=fmt, errors="coerce", utc=True)
        else:
            parsed = pd.to_datetime(text, errors="coerce", dayfirst=dayfirst, utc=True,
                                    format="mixed")
        bad = parsed.isna() & text.notna()
        return _naive_utc(parsed), bad.fillna(False).astype(bool)
    return _naive_utc(parsed), pd.Series(False, index=values.index)


def _naive_utc(s: pd.Series) -> pd.Series:
    if getattr(s.dt, "tz", None) is not None:
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    return s.astype(TIMESTAMP_DTYPE)


def parse_numbers(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Parse to float; (parsed, bad) as for timestamps."""
    if pd.api.types.is_numeric_dtype(values):
        return values.astype("float64"), pd.Series(False, index=values.index)
    if values.isna().all():
        return pd.Series(np.nan, index=values.index, dtype="float64"), pd.Series(False, index=values.index)
    text = values.astype("string").str.strip()
    text = text.mask(text == "")
    parsed = pd.to_numeric(text, errors="coerce").astype("float64")
    return parsed, (parsed.isna() & text.notna()).fillna(False).astype(bool)


class _Rejector:
    """Collects rejected rows of one table with their reasons, keeping the first reason."""

    def __init__(self, table: str, frame: pd.DataFrame):
        self.table = table
        self.frame = frame
        self.rejected = np.zeros(len(frame), dtype=bool)  # numpy: a payload of one deal runs ~30 checks
        self.parts: list[pd.DataFrame] = []

    def reject(self, mask: pd.Series | np.ndarray, reason: str, detail: "Callable[[], pd.Series] | str" = "") -> None:
        """Reject the rows in `mask` (missing = False) not rejected yet. `detail` is a string
        or a callable returning a per-row Series: it is only evaluated when something is
        rejected, so clean data never pays for formatting millions of detail strings."""
        mask = _bool_array(mask) & ~self.rejected
        if not mask.any():
            return
        rows = self.frame.loc[mask]
        detail = detail() if callable(detail) else detail
        det = detail[mask].astype("string") if isinstance(detail, pd.Series) else detail
        ids = rows["deal_id"].astype("string") if "deal_id" in rows else pd.NA
        self.parts.append(pd.DataFrame({
            "table": self.table, "row": rows["_row"].to_numpy(dtype="int64"),
            "deal_id": ids, "reason": reason, "detail": det}))
        self.rejected |= mask

    def clean(self) -> pd.DataFrame:
        return self.frame.loc[~self.rejected]

    def rejects(self) -> pd.DataFrame:
        return pd.concat(self.parts, ignore_index=True) if self.parts else empty_rejects()


def _bool_array(mask: pd.Series | np.ndarray) -> np.ndarray:
    if isinstance(mask, pd.Series):
        return mask.to_numpy(dtype=bool, na_value=False)
    return np.asarray(mask, dtype=bool)


def _with_row_numbers(df: pd.DataFrame) -> pd.DataFrame:
    df = df.reset_index(drop=True).copy()
    if "_row" not in df:
        df["_row"] = np.arange(len(df), dtype="int64")
    return df


def _require_columns(df: pd.DataFrame, required: list[str], table: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise SchemaError(f"table '{table}' has no column {missing}: map a source column "
                          f"onto it in the mapping's 'columns' section")


def validate(deals: pd.DataFrame, meta: DatasetMeta, stage_events: pd.DataFrame | None = None,
             activities: pd.DataFrame | None = None, accounts: pd.DataFrame | None = None,
             date_format: str | None = None, dayfirst: bool = False, plausible: Plausible | None = None,
             closing: dict[str, str] | None = None) -> ValidationResult:
    """Split raw canonical-named tables into clean typed tables and a rejects table.

    Raw tables may hold strings; dates are parsed with `date_format` (or inferred, with
    `dayfirst`). A deal that is rejected takes its events and activities with it, each
    reported with reason `parent_deal_rejected`. With `plausible`, implausible dates and
    numbers are rejects; with `closing` (stage -> won/lost), a history row of a closing
    stage must agree with its deal's outcome.
    """
    deals_v, deal_rej = _validate_deals(deals, meta, date_format, dayfirst, plausible)
    parts = [deal_rej]
    events_v = acts_v = None
    known = deals_v.set_index("deal_id")
    # a duplicate id keeps its first row, so only ids with no clean row take children along
    rejected_ids = set(deal_rej["deal_id"].dropna()) - set(deals_v["deal_id"])
    if stage_events is not None:
        events_v, rej = _validate_events(stage_events, meta, known, rejected_ids, date_format, dayfirst,
                                         plausible, closing or {})
        parts.append(rej)
    if activities is not None:
        acts_v, rej = _validate_activities(activities, known, rejected_ids, date_format, dayfirst, plausible)
        parts.append(rej)
    accounts_v = None
    if accounts is not None:
        accounts_v, rej = _validate_accounts(accounts)
        parts.append(rej)
    rejects = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) \
        else empty_rejects()
    data = CanonicalData(deals=deals_v, meta=meta, stage_events=events_v, activities=acts_v,
                         accounts=accounts_v)
    return ValidationResult(data=data, rejects=rejects)


def _validate_deals(raw: pd.DataFrame, meta: DatasetMeta, fmt: str | None, dayfirst: bool,
                    plausible: Plausible | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    required = ["deal_id"] if meta.static else DEAL_REQUIRED
    _require_columns(raw, required, "deals")
    df = _with_row_numbers(raw)
    for col in ["created_at", "closed_at", "amount", "outcome"]:
        if col not in df:
            df[col] = pd.NA
    r = _Rejector("deals", df)
    df["deal_id"] = df["deal_id"].astype("string").str.strip()
    r.reject(df["deal_id"].isna() | (df["deal_id"] == ""), Reason.MISSING_REQUIRED, "deal_id")
    created, bad_created = parse_timestamps(df["created_at"], fmt, dayfirst)
    closed, bad_closed = parse_timestamps(df["closed_at"], fmt, dayfirst)
    r.reject(bad_created, Reason.UNPARSEABLE_DATE, lambda: "created_at=" + df["created_at"].astype("string"))
    r.reject(bad_closed, Reason.UNPARSEABLE_DATE, lambda: "closed_at=" + df["closed_at"].astype("string"))
    if not meta.static:
        r.reject(created.isna(), Reason.MISSING_REQUIRED, "created_at")
    amount, bad_amount = parse_numbers(df["amount"])
    r.reject(bad_amount, Reason.UNPARSEABLE_NUMBER, lambda: "amount=" + df["amount"].astype("string"))
    r.reject(amount < 0, Reason.NEGATIVE_AMOUNT, lambda: "amount=" + amount.astype("string"))
    if plausible is not None:
        dates = {"created_at": created, "closed_at": closed}
        if "expected_close_date" in df:
            dates["expected_close_date"] = parse_timestamps(df["expected_close_date"], fmt, dayfirst)[0]
        plausible.reject_dates(r, **dates)
        plausible.reject_numbers(r, "amount", amount, plausible.max_amount)
    outcome = _outcomes(df["outcome"])
    has_outcome, has_close = outcome.notna().to_numpy(dtype=bool), closed.notna().to_numpy(dtype=bool)
    if has_outcome.any():  # open deals (a scoring payload) have none to check
        r.reject(has_outcome & ~outcome.isin(OUTCOMES).to_numpy(dtype=bool), Reason.INVALID_OUTCOME,
                 lambda: "outcome=" + outcome.fillna(""))
    if not meta.static:
        r.reject(has_outcome & ~has_close, Reason.OUTCOME_WITHOUT_CLOSE, lambda: "outcome=" + outcome.fillna(""))
        r.reject(~has_outcome & has_close, Reason.CLOSE_WITHOUT_OUTCOME, "closed_at set, outcome empty")
        if has_close.any():
            r.reject(closed < created, Reason.CLOSE_BEFORE_CREATE,
                     lambda: "closed " + closed.astype("string") + " < created " + created.astype("string"))
    if "stage" in df:
        st = df["stage"].astype("string").str.strip()
        r.reject(st.notna() & ~st.isin(meta.stages), Reason.UNKNOWN_STAGE, lambda: "stage=" + st.fillna(""))
    _reject_bad_numeric_attributes(r, df, meta, plausible)
    # duplicates last, among rows still clean: the first valid row of an id is kept
    if len(df) > 1:
        dup = df["deal_id"].where(~r.rejected).duplicated(keep="first") & ~r.rejected
        r.reject(dup, Reason.DUPLICATE_ID, lambda: "deal_id=" + df["deal_id"].fillna(""))
    df["created_at"], df["closed_at"], df["amount"], df["outcome"] = created, closed, amount, outcome
    clean = r.clean()
    clean = _type_deals(clean, meta)
    return clean, r.rejects()


def _outcomes(values: pd.Series) -> pd.Series:
    """Outcome text trimmed and lower-cased, empty as missing."""
    if values.isna().all():  # open deals only (a scoring payload): nothing to normalise
        return pd.Series(pd.NA, index=values.index, dtype="string")
    outcome = values.astype("string").str.strip().str.lower()
    return outcome.mask(outcome == "")


def _reject_bad_numeric_attributes(r: _Rejector, df: pd.DataFrame, meta: DatasetMeta,
                                   plausible: Plausible | None) -> None:
    """A numeric attribute cell that is not a number (a spreadsheet's '01-May') rejects its row
    rather than silently becoming empty; so does an implausible one (inf, 1e400)."""
    for name, kind in meta.attributes.items():
        if name not in df:
            raise SchemaError(f"declared attribute '{name}' is not a column of deals: check "
                              f"the mapping's 'attributes' section")
        if kind == "numeric":
            parsed, bad = parse_numbers(df[name])
            r.reject(bad, Reason.UNPARSEABLE_NUMBER, lambda name=name: f"{name}=" + df[name].astype("string"))
            if plausible is not None:
                plausible.reject_numbers(r, name, parsed, plausible.max_number)


def _type_deals(df: pd.DataFrame, meta: DatasetMeta) -> pd.DataFrame:
    df = df.drop(columns=["_row"]).reset_index(drop=True)
    missing = [name for name in meta.attributes if name not in df]
    if missing:
        raise SchemaError(f"declared attribute '{missing[0]}' is not a column of deals: check "
                          f"the mapping's 'attributes' section")
    for col in DEAL_CATEGORICAL + ["stage"]:
        if col in df:
            df[col] = df[col].astype("string")
    for name, kind in meta.attributes.items():
        df[name] = parse_numbers(df[name])[0] if kind == "numeric" else df[name].astype("string")
    return df


def _validate_children(r: _Rejector, known: pd.DataFrame, rejected_ids: set
                       ) -> tuple[pd.Series, pd.Series]:
    """Shared checks of rows that point at a deal; returns the parent's created_at and closed_at."""
    df = r.frame
    df["deal_id"] = df["deal_id"].astype("string").str.strip()
    r.reject(df["deal_id"].isna(), Reason.MISSING_REQUIRED, "deal_id")
    if rejected_ids:
        r.reject(df["deal_id"].isin(list(rejected_ids)), Reason.DEAL_REJECTED, lambda: "deal_id=" + df["deal_id"].fillna(""))
    is_known = df["deal_id"].isin(known.index)
    r.reject(~is_known, Reason.UNKNOWN_DEAL, lambda: "deal_id=" + df["deal_id"].fillna(""))
    parent = np.where(is_known.to_numpy(dtype=bool), known.index.get_indexer(df["deal_id"]), -1)
    return _parent_times(known["created_at"], parent, df.index), _parent_times(known["closed_at"], parent, df.index)


def _parent_times(times: pd.Series, parent: np.ndarray, index: pd.Index) -> pd.Series:
    """The parent deal's time per child row (NaT for a row with no known parent)."""
    values = times.to_numpy()
    taken = values[np.maximum(parent, 0)] if len(values) else np.full(len(parent), np.datetime64("NaT"), values.dtype)
    return pd.Series(np.where(parent >= 0, taken, np.datetime64("NaT")).astype(values.dtype), index=index)


def _validate_events(raw: pd.DataFrame, meta: DatasetMeta, known: pd.DataFrame, rejected_ids: set,
                     fmt: str | None, dayfirst: bool, plausible: Plausible | None = None,
                     closing: dict[str, str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    _require_columns(raw, ["deal_id", "stage", "entered_at"], "stage_events")
    df = _with_row_numbers(raw)
    r = _Rejector("stage_events", df)
    created, closed = _validate_children(r, known, rejected_ids)
    entered, bad = parse_timestamps(df["entered_at"], fmt, dayfirst)
    r.reject(bad, Reason.UNPARSEABLE_DATE, lambda: "entered_at=" + df["entered_at"].astype("string"))
    r.reject(entered.isna(), Reason.MISSING_REQUIRED, "entered_at")
    stage = df["stage"].astype("string").str.strip()
    r.reject(~stage.isin(meta.stages), Reason.UNKNOWN_STAGE, lambda: "stage=" + stage.fillna(""))
    r.reject(entered < created, Reason.EVENT_BEFORE_CREATE, lambda: "entered_at " + entered.astype("string"))
    r.reject(entered > closed, Reason.EVENT_AFTER_CLOSE, lambda: "entered_at " + entered.astype("string"))
    if plausible is not None:
        plausible.reject_dates(r, entered_at=entered)
    if closing:
        _reject_contradicting_closes(r, stage, known, closing)
    out = pd.DataFrame({"deal_id": df["deal_id"], "stage": stage, "entered_at": entered}, index=df.index)
    amount = parse_numbers(df["amount"]) if "amount" in df else (pd.Series(np.nan, index=df.index), None)
    if "amount" in df:
        r.reject(amount[1], Reason.UNPARSEABLE_NUMBER, lambda: "amount=" + df["amount"].astype("string"))
        r.reject(amount[0] < 0, Reason.NEGATIVE_AMOUNT, lambda: "amount=" + amount[0].astype("string"))
        if plausible is not None:
            plausible.reject_numbers(r, "amount", amount[0], plausible.max_amount)
    out["amount"] = amount[0]
    if "expected_close_date" in df:
        ecd, bad_ecd = parse_timestamps(df["expected_close_date"], fmt, dayfirst)
        r.reject(bad_ecd, Reason.UNPARSEABLE_DATE, lambda: "expected_close_date=" + df["expected_close_date"].astype("string"))
        if plausible is not None:
            plausible.reject_dates(r, expected_close_date=ecd)
        out["expected_close_date"] = ecd
    else:
        out["expected_close_date"] = pd.Series(pd.NaT, index=df.index, dtype=TIMESTAMP_DTYPE)
    clean = _sorted_by_deal(out.loc[~r.rejected], "entered_at")
    return clean, r.rejects()


def _reject_contradicting_closes(r: _Rejector, stage: pd.Series, known: pd.DataFrame,
                                 closing: dict[str, str]) -> None:
    """A won/lost row of the history whose deal is open, or has the other outcome."""
    closes = stage.map(closing)
    outcome = r.frame["deal_id"].map(known["outcome"]).astype("string").fillna("open")
    r.reject(closes.notna() & (closes != outcome), Reason.CONTRADICTS_OUTCOME,
             lambda: "stage=" + stage.fillna("") + ", the deal's outcome is " + outcome)


def _validate_activities(raw: pd.DataFrame, known: pd.DataFrame, rejected_ids: set,
                         fmt: str | None, dayfirst: bool, plausible: Plausible | None = None
                         ) -> tuple[pd.DataFrame, pd.DataFrame]:
    _require_columns(raw, ["deal_id", "occurred_at"], "activities")
    df = _with_row_numbers(raw)
    r = _Rejector("activities", df)
    created, _closed = _validate_children(r, known, rejected_ids)
    occurred, bad = parse_timestamps(df["occurred_at"], fmt, dayfirst)
    r.reject(bad, Reason.UNPARSEABLE_DATE, lambda: "occurred_at=" + df["occurred_at"].astype("string"))
    r.reject(occurred.isna(), Reason.MISSING_REQUIRED, "occurred_at")
    r.reject(occurred < created, Reason.EVENT_BEFORE_CREATE, lambda: "occurred_at " + occurred.astype("string"))
    if plausible is not None:
        plausible.reject_dates(r, occurred_at=occurred)
    kind = df["type"].astype("string") if "type" in df else pd.Series("activity", index=df.index, dtype="string")
    out = pd.DataFrame({"deal_id": df["deal_id"], "occurred_at": occurred, "type": kind}, index=df.index)
    clean = _sorted_by_deal(out.loc[~r.rejected], "occurred_at")
    return clean, r.rejects()


def _sorted_by_deal(frame: pd.DataFrame, time_col: str) -> pd.DataFrame:
    """Rows sorted by (deal_id, time), ties in input order: sort_values(kind="stable")
    without its per-column overhead (one lexsort), which a one-deal request notices."""
    codes, _ = pd.factorize(frame["deal_id"], sort=True)
    times = frame[time_col].to_numpy(dtype=TIMESTAMP_DTYPE)
    if (codes < 0).any() or np.isnat(times).any():  # missing keys sort last there: let pandas do it
        return frame.sort_values(["deal_id", time_col], kind="stable").reset_index(drop=True)
    return frame.take(np.lexsort((times.view("int64"), codes))).reset_index(drop=True)


def _validate_accounts(raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    _require_columns(raw, ["account_id"], "accounts")
    df = _with_row_numbers(raw)
    df["account_id"] = df["account_id"].astype("string").str.strip()
    df["deal_id"] = pd.NA  # rejects carry a deal_id column; accounts have none
    r = _Rejector("accounts", df)
    r.reject(df["account_id"].isna(), Reason.MISSING_REQUIRED, "account_id")
    r.reject(df["account_id"].duplicated(keep="first"), Reason.DUPLICATE_ID, lambda: "account_id=" + df["account_id"].fillna(""))
    clean = r.clean().drop(columns=["_row", "deal_id"]).reset_index(drop=True)
    return clean, r.rejects()

"""The validator: splits raw canonical tables into clean tables plus a rejects table,
one reason per rejected row (nothing is dropped silently). Every source (CSV/Parquet/SQL
export through a mapping, the synthetic generator) passes here before any feature is
computed; requests apply the same checks on arrays (`features.payload`).

It is over 300 lines because the four tables' checks share one `Rejector` and one order
of checks (deals first, then their children against the clean deals); split per table,
the rules a reader must hold together would sit in four files.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from features.errors import SchemaError
from features.parsing import parse_numbers, parse_timestamps
from features.schema import (
    DEAL_CATEGORICAL,
    DEAL_REQUIRED,
    OUTCOMES,
    TIMESTAMP_DTYPE,
    CanonicalData,
    DatasetMeta,
    Reason,
    ValidationResult,
    empty_rejects,
)


@dataclass(frozen=True)
class Plausible:
    """Bounds of believable values (ingestion checks them; see the mapping's `plausible`):
    dates within [earliest, latest]; amounts and numeric attributes finite and at most
    max_amount / max_number in size."""

    earliest: pd.Timestamp
    latest: pd.Timestamp
    max_amount: float
    max_number: float

    def reject_dates(self, r: "Rejector", **dates: pd.Series) -> None:
        for col, parsed in dates.items():
            outside = (parsed < self.earliest) | (parsed > self.latest)
            r.reject(outside, Reason.DATE_OUT_OF_RANGE, lambda col=col, parsed=parsed: f"{col}=" + parsed.astype(
                "string") + f" (plausible: {self.earliest:%Y-%m-%d} .. {self.latest:%Y-%m-%d})")

    def reject_numbers(self, r: "Rejector", col: str, parsed: pd.Series, bound: float) -> None:
        r.reject(parsed.abs() > bound, Reason.NUMBER_OUT_OF_RANGE,
                 lambda: f"{col}=" + parsed.astype("string") + f" (plausible: at most {bound:g} in size)")


class Rejector:
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
    r = Rejector("deals", df)
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


def _reject_bad_numeric_attributes(r: Rejector, df: pd.DataFrame, meta: DatasetMeta,
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


def _validate_children(r: Rejector, known: pd.DataFrame, rejected_ids: set
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
    r = Rejector("stage_events", df)
    created, closed = _validate_children(r, known, rejected_ids)
    entered = _child_time(r, df, "entered_at", fmt, dayfirst)
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


def _reject_contradicting_closes(r: Rejector, stage: pd.Series, known: pd.DataFrame,
                                 closing: dict[str, str]) -> None:
    """A won/lost row of the history whose deal is open, or has the other outcome."""
    closes = stage.map(closing)
    outcome = r.frame["deal_id"].map(known["outcome"]).astype("string").fillna("open")
    r.reject(closes.notna() & (closes != outcome), Reason.CONTRADICTS_OUTCOME,
             lambda: "stage=" + stage.fillna("") + ", the deal's outcome is " + outcome)


def _child_time(r: Rejector, df: pd.DataFrame, col: str, fmt: str | None, dayfirst: bool) -> pd.Series:
    """A child row's time, parsed; unparseable and missing times rejected (the first checks
    every child table makes on its time; before-creation comes later, after the table's own
    checks, so the first reason stays the one `features.payload` reports too)."""
    at, bad = parse_timestamps(df[col], fmt, dayfirst)
    r.reject(bad, Reason.UNPARSEABLE_DATE, lambda: f"{col}=" + df[col].astype("string"))
    r.reject(at.isna(), Reason.MISSING_REQUIRED, col)
    return at


def _validate_activities(raw: pd.DataFrame, known: pd.DataFrame, rejected_ids: set,
                         fmt: str | None, dayfirst: bool, plausible: Plausible | None = None
                         ) -> tuple[pd.DataFrame, pd.DataFrame]:
    _require_columns(raw, ["deal_id", "occurred_at"], "activities")
    df = _with_row_numbers(raw)
    r = Rejector("activities", df)
    created, _closed = _validate_children(r, known, rejected_ids)
    occurred = _child_time(r, df, "occurred_at", fmt, dayfirst)
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
    r = Rejector("accounts", df)
    r.reject(df["account_id"].isna(), Reason.MISSING_REQUIRED, "account_id")
    r.reject(df["account_id"].duplicated(keep="first"), Reason.DUPLICATE_ID, lambda: "account_id=" + df["account_id"].fillna(""))
    clean = r.clean().drop(columns=["_row", "deal_id"]).reset_index(drop=True)
    return clean, r.rejects()

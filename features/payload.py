"""Open deals sent in a request -> `DealArrays`, with the ingestion validator's checks.

The request path of both the service (`/score`) and the MLflow pyfunc model: a payload deal
is a dict of canonical deal fields plus `stage`, optional `stage_entered_at`,
`expected_close_date`, `stage_history` and `activities`. The deals are read into columns
(`PayloadColumns`: from dicts by `payload_columns`, or by the service straight from a JSON
body, `serving.columnar`) and every check the scoring code relies on is made on those
(`checked_payload`; a request-sized payload costs microseconds to a few ms, where building
and validating canonical frames costs ~10 ms): required ids
and dates, dates that parse (ISO text or datetimes), numbers that parse, non-negative
amounts, known stages, children dated before their deal, numeric attributes, unique ids.
Each reject says where in the request it is (`PayloadReject.path`) and which row of the
canonical tables it would be, with the validator's reason and detail: equivalence with
`features.validation.validate` on the same deals is tested (tests/features/test_payload_arrays.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from features.arrays import DealArrays, empty_events
from features.payload_values import checked_times, child_numbers, numbers, strings
from features.schema import DEAL_CATEGORICAL, TIMESTAMP_DTYPE, DatasetMeta, Reason


@dataclass(frozen=True)
class PayloadReject:
    """A value of the request the validator rejects: where it is in the request (`path`),
    the row of the canonical tables it would be, and the validator's reason and detail."""

    table: str  # deals, stage_events or activities
    row: int  # the row in that table, as `features.validation.validate` numbers it
    deal: int  # position of the deal in the request
    nested: str | None  # "stage_history" or "activities"; None: a field of the deal itself
    index: int | None  # position in that list; None for the stage row of a deal sent without history
    field: str
    deal_id: object
    reason: str
    detail: str

    @property
    def path(self) -> str:
        """Where in the request, e.g. `deals[3].stage_history[1].entered_at`."""
        where = f"deals[{self.deal}]" if self.index is None else f"deals[{self.deal}].{self.nested}[{self.index}]"
        return f"{where}.{self.field}"


@dataclass
class CheckedPayload:
    """Payload deals as `DealArrays`, what the validator rejects (empty when nothing is; the
    arrays are only meant to be scored then) and the dated facts to check against as-of."""

    arrays: DealArrays
    rejects: list[PayloadReject]
    facts: dict[str, tuple[np.ndarray, np.ndarray]]  # field name -> (deal position, time) of dated facts


PAYLOAD_FIELDS = ["deal_id", "created_at", "amount", "stage", "stage_entered_at", "expected_close_date",
                  *DEAL_CATEGORICAL]  # a deal's own fields, besides the dataset's attributes
HISTORY_FIELDS = ["stage", "entered_at", "amount", "expected_close_date"]


@dataclass
class PayloadColumns:
    """Payload deals as columns of the values sent, what `checked_payload` checks: a list of
    payload values (datetimes, text, numbers, None) or an array of values already parsed
    (datetime64, float64) per field. Built from dicts by `payload_columns`, or straight from a
    JSON body by the service (`serving.columnar`)."""

    deals: dict[str, Sequence]  # PAYLOAD_FIELDS and the attributes -> one value per deal (None: absent)
    history: dict[str, Sequence]  # "deal" (position) and HISTORY_FIELDS -> one value per stage history row
    listed: Sequence[bool]  # per deal: sent its stage history (else its one row is `implied_entry`)
    activities: dict[str, Sequence] | None  # "deal" and "occurred_at" per activity; None: no deal sent any
    activity_sent: Sequence[bool]  # per deal: sent the activities key (a list, maybe empty)

    def __len__(self) -> int:
        return len(self.deals["deal_id"])

    def rows(self) -> int:
        """Deals plus their stage history and activity rows."""
        return len(self) + len(self.history["deal"]) + (0 if self.activities is None else
                                                          len(self.activities["deal"]))


def implied_entry(stage, stage_entered_at, created_at, amount, expected_close_date) -> dict | None:
    """The stage history row of a deal sent without history: it entered its current stage at
    stage_entered_at (or creation); None without a stage."""
    if stage is None:
        return None
    return {"stage": stage, "entered_at": stage_entered_at or created_at, "amount": amount,
            "expected_close_date": expected_close_date}


def payload_columns(records: list[dict], meta: DatasetMeta) -> PayloadColumns:
    """Payload deals (dicts) as columns; a deal's missing key reads as None."""
    names = list(dict.fromkeys([*PAYLOAD_FIELDS, *meta.attributes]))
    deals = {name: [r.get(name) for r in records] for name in names}
    # flat lists by comprehension, no per-row tuples: a 1,000-deal request has ~25,000 child rows
    histories = [rec.get("stage_history") or _implied(rec) for rec in records]
    history = {"deal": [i for i, rows in enumerate(histories) for _ in rows]}
    history.update({name: [h.get(name) for rows in histories for h in rows] for name in HISTORY_FIELDS})
    sent = ["activities" in rec for rec in records]
    activities = None
    if any(sent):
        acts = [rec.get("activities") or () for rec in records]
        activities = {"deal": [i for i, items in enumerate(acts) for _ in items],
                      "occurred_at": [act.get("occurred_at") for items in acts for act in items]}
    return PayloadColumns(deals, history, [bool(rec.get("stage_history")) for rec in records], activities, sent)


def _implied(rec: dict) -> list[dict]:
    entry = implied_entry(rec.get("stage"), rec.get("stage_entered_at"), rec.get("created_at"), rec.get("amount"),
                          rec.get("expected_close_date"))
    return [] if entry is None else [entry]


def payload_arrays(records: list[dict], meta: DatasetMeta) -> CheckedPayload:
    """Payload deals -> arrays, with every check of `features.validation.validate` that applies
    to open deals (see the module docstring)."""
    return checked_payload(payload_columns(records, meta), meta)


def checked_payload(columns: PayloadColumns, meta: DatasetMeta) -> CheckedPayload:
    """Payload columns -> arrays, rejects and dated facts (`payload_arrays`)."""
    stages = {s: i for i, s in enumerate(meta.stages)}
    deals = _DealChecks(columns.deals["deal_id"])
    created, amount, fields = _checked_deal_fields(columns.deals, meta, stages, deals)
    rejects = deals.rejects
    events, event_facts = _payload_events(columns, stages, created, deals.rejected, rejects) if not meta.static \
        else (empty_events(), (np.zeros(0, "int64"), np.zeros(0, TIMESTAMP_DTYPE)))
    activities = _payload_activities(columns, created, deals.rejected, rejects) if not meta.static else None
    sent = np.asarray(columns.activity_sent, dtype=bool)
    arrays = DealArrays(deal_id=np.array(deals.ids, dtype=object), created_at=created, amount=amount,
                        fields=fields, events=events, activities=activities,
                        activity_known=None if activities is None or sent.all() else sent)
    facts = {"created_at": (np.arange(len(columns)), created), "stage_history": event_facts}
    if activities is not None:
        facts["activities"] = (activities["deal"], activities["occurred_at"])
    return CheckedPayload(arrays=arrays, rejects=rejects, facts=facts)


def _checked_deal_fields(columns: dict[str, Sequence], meta: DatasetMeta, stages: dict[str, int],
                         deals: "_DealChecks") -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(created_at, amount, category and attribute fields) of the deals, rejecting bad
    ones in the validator's order of checks."""
    created, bad_created = checked_times(columns["created_at"])
    amount, bad_amount = numbers(columns["amount"])
    deals.reject(_missing_ids(deals.ids), Reason.MISSING_REQUIRED, "deal_id", lambda i: "deal_id")
    deals.reject(bad_created, Reason.UNPARSEABLE_DATE, "created_at",
                 lambda i: f"created_at={columns['created_at'][i]}")
    if not meta.static:
        deals.reject(np.isnat(created), Reason.MISSING_REQUIRED, "created_at", lambda i: "created_at")
    deals.reject(bad_amount, Reason.UNPARSEABLE_NUMBER, "amount", lambda i: f"amount={columns['amount'][i]}")
    deals.reject(amount < 0, Reason.NEGATIVE_AMOUNT, "amount", lambda i: f"amount={amount[i]}")
    stage = columns["stage"]
    deals.reject([i for i, v in enumerate(stage) if v is not None and v not in stages], Reason.UNKNOWN_STAGE,
                 "stage", lambda i: f"stage={stage[i]}")
    fields = {c: strings(columns[c]) for c in DEAL_CATEGORICAL}
    for name, kind in meta.attributes.items():
        values = columns[name]
        if kind != "numeric":
            fields[name] = strings(values)
            continue
        fields[name], bad = numbers(values)
        deals.reject(bad, Reason.UNPARSEABLE_NUMBER, name, lambda i, v=values, k=name: f"{k}={v[i]}")
    deals.reject(_repeated_ids(deals.ids, deals.rejected), Reason.DUPLICATE_ID, "deal_id",
                 lambda i: f"deal_id={deals.ids[i]}")
    return created, amount, fields


class _DealChecks:
    """The deals' rejects: the first reason of a deal wins, as in the validator."""

    def __init__(self, ids: Sequence):
        self.ids = list(ids)
        self.rejected = np.zeros(len(self.ids), dtype=bool)
        self.rejects: list[PayloadReject] = []

    def reject(self, rows: np.ndarray | list[int], reason: str, field: str, detail) -> None:
        """Reject `rows` (positions, or a mask) not rejected yet for `reason`."""
        if isinstance(rows, np.ndarray) and rows.dtype == bool:
            if not rows.any():  # the usual case, in a microsecond
                return
            rows = np.flatnonzero(rows)
        for i in rows:  # rejects are few, usually none
            i = int(i)
            if not self.rejected[i]:
                self.rejects.append(PayloadReject("deals", i, i, None, None, field, self.ids[i], reason, detail(i)))
                self.rejected[i] = True


def _missing_ids(ids: list) -> list[int]:
    if set(map(type, ids)) <= {str} and all(map(str.strip, ids)):  # the usual case, in C
        return []
    return [i for i, v in enumerate(ids) if not isinstance(v, str) or not v.strip()]


def _repeated_ids(ids: list, rejected: np.ndarray) -> list[int]:
    """Positions of ids that repeat an earlier clean deal's (the first one is kept)."""
    if len(set(ids)) == len(ids):
        return []
    seen, out = set(), []
    for i, v in enumerate(ids):
        if not rejected[i]:
            if v in seen:
                out.append(i)
            seen.add(v)
    return out


def _payload_events(columns: PayloadColumns, stages: dict[str, int], created: np.ndarray, rejected: np.ndarray,
                    rejects: list[PayloadReject]) -> tuple[dict[str, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Stage history rows (or the one implied row of a deal sent without history), in the
    order of the validator's `stage_events` table."""
    rows = columns.history
    deal, stage, entered, ecd = rows["deal"], rows["stage"], rows["entered_at"], rows["expected_close_date"]
    amount, bad_amount = child_numbers(rows["amount"])
    deal_pos = np.asarray(deal, dtype="int64")
    entered_at, bad_entered = checked_times(entered)
    expected_close, bad_ecd = checked_times(ecd)
    codes = np.array([stages.get(s, -1) for s in stage], dtype="int64")
    ids = columns.deals["deal_id"]
    checks = [(rejected[deal_pos], Reason.DEAL_REJECTED, "deal_id", lambda row: f"deal_id={ids[deal[row]]}"),
              (bad_entered, Reason.UNPARSEABLE_DATE, "entered_at", lambda row: f"entered_at={entered[row]}"),
              (np.isnat(entered_at), Reason.MISSING_REQUIRED, "entered_at", lambda row: "entered_at"),
              (codes < 0, Reason.UNKNOWN_STAGE, "stage", lambda row: f"stage={stage[row]}"),
              (entered_at < created[deal_pos], Reason.EVENT_BEFORE_CREATE, "entered_at",
               lambda row: f"entered_at {pd.Timestamp(entered_at[row])}"),
              (bad_amount, Reason.UNPARSEABLE_NUMBER, "amount", lambda row: f"amount={amount[row]}"),
              (amount < 0, Reason.NEGATIVE_AMOUNT, "amount", lambda row: f"amount={amount[row]}"),
              (bad_ecd, Reason.UNPARSEABLE_DATE, "expected_close_date", lambda row: f"expected_close_date={ecd[row]}")]
    _reject_children(rejects, "stage_events", "stage_history", deal_pos, ids, columns.listed, checks)
    events = {"deal": deal_pos, "stage_index": codes, "entered_at": entered_at, "amount": amount,
              "expected_close_date": expected_close}
    return events, (deal_pos, entered_at)


IMPLIED_FIELDS = {"entered_at": "stage_entered_at", "amount": "amount", "expected_close_date": "expected_close_date",
                  "stage": "stage", "deal_id": "deal_id"}  # a field of the implied stage row -> the deal's field


def _reject_children(rejects: list[PayloadReject], table: str, nested: str, deal: np.ndarray, ids: Sequence,
                     listed: Sequence[bool] | None, checks: list[tuple]) -> None:
    """Child rows failing a check (mask, reason, field, detail), first reason wins. `deal`:
    each row's deal position, in request order; a deal's rows are its list in order, or
    the one row implied by a deal sent without history (`listed` false; None: all listed)."""
    if not len(deal):
        return
    flagged = np.zeros(len(deal), dtype=bool)
    for mask, reason, field, detail in checks:
        if not mask.any():  # the usual case, in a microsecond
            continue
        for row in np.flatnonzero(mask & ~flagged).tolist():  # rejects are few, usually none
            flagged[row] = True
            i = int(deal[row])
            sent = listed is None or bool(listed[i])
            index = row - int(np.searchsorted(deal, i)) if sent else None
            rejects.append(PayloadReject(table, row, i, nested, index, field if sent else IMPLIED_FIELDS[field],
                                         ids[i], reason, detail(row)))


def _payload_activities(columns: PayloadColumns, created: np.ndarray, rejected: np.ndarray,
                        rejects: list[PayloadReject]) -> dict[str, np.ndarray] | None:
    if columns.activities is None:
        return None  # no activity data at all: activity features are missing, not zero
    deal, occurred = columns.activities["deal"], columns.activities["occurred_at"]
    deal_pos = np.asarray(deal, dtype="int64")
    occurred_at, bad = checked_times(occurred)
    ids = columns.deals["deal_id"]
    checks = [(rejected[deal_pos], Reason.DEAL_REJECTED, "deal_id", lambda row: f"deal_id={ids[deal[row]]}"),
              (bad, Reason.UNPARSEABLE_DATE, "occurred_at", lambda row: f"occurred_at={occurred[row]}"),
              (np.isnat(occurred_at), Reason.MISSING_REQUIRED, "occurred_at", lambda row: "occurred_at"),
              (occurred_at < created[deal_pos], Reason.EVENT_BEFORE_CREATE, "occurred_at",
               lambda row: f"occurred_at {pd.Timestamp(occurred_at[row])}")]
    _reject_children(rejects, "activities", "activities", deal_pos, ids, None, checks)
    return {"deal": deal_pos, "occurred_at": occurred_at}

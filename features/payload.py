"""Open deals sent in a request -> `DealArrays`, with the ingestion validator's checks.

The request path of both the service (`/score`) and the MLflow pyfunc model: a payload deal
is a dict of canonical deal fields plus `stage`, optional `stage_entered_at`,
`expected_close_date`, `stage_history` and `activities`. Every check the scoring code
relies on is made here, on plain Python values (a request-sized payload costs
microseconds, where building and validating canonical frames costs ~10 ms): required ids
and dates, dates that parse (ISO text or datetimes), numbers that parse, non-negative
amounts, known stages, children dated before their deal, numeric attributes, unique ids.
Each reject says where in the request it is (`PayloadReject.path`) and which row of the
canonical tables it would be, with the validator's reason and detail: equivalence with
`features.validation.validate` on the same deals is tested (tests/features/test_payload_arrays.py).
"""
from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

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


def payload_arrays(records: list[dict], meta: DatasetMeta) -> CheckedPayload:
    """Payload deals -> arrays, with every check of `features.validation.validate` that applies
    to open deals, row by row in plain Python (see the module docstring)."""
    stages = {s: i for i, s in enumerate(meta.stages)}
    deals = _DealChecks(records)
    created, amount, fields = _checked_deal_fields(records, meta, stages, deals)
    rejects = deals.rejects
    events, event_facts = _payload_events(records, stages, created, deals.rejected, rejects) if not meta.static \
        else (empty_events(), (np.zeros(0, "int64"), np.zeros(0, TIMESTAMP_DTYPE)))
    activities = _payload_activities(records, created, deals.rejected, rejects) if not meta.static else None
    arrays = DealArrays(deal_id=np.array(deals.ids, dtype=object), created_at=created, amount=amount,
                        fields=fields, events=events, activities=activities,
                        activity_known=None if activities is None else _activity_known(records))
    facts = {"created_at": (np.arange(len(records)), created), "stage_history": event_facts}
    if activities is not None:
        facts["activities"] = (activities["deal"], activities["occurred_at"])
    return CheckedPayload(arrays=arrays, rejects=rejects, facts=facts)


def _checked_deal_fields(records: list[dict], meta: DatasetMeta, stages: dict[str, int], deals: "_DealChecks"
                         ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(created_at, amount, category and attribute fields) of the deals, rejecting bad
    ones in the validator's order of checks."""
    created, bad_created = checked_times([r.get("created_at") for r in records])
    amount, bad_amount = numbers([r.get("amount") for r in records])
    deals.reject(_missing_ids(deals.ids), Reason.MISSING_REQUIRED, "deal_id", lambda i: "deal_id")
    deals.reject(bad_created, Reason.UNPARSEABLE_DATE, "created_at",
                 lambda i: f"created_at={records[i].get('created_at')}")
    if not meta.static:
        deals.reject(np.isnat(created), Reason.MISSING_REQUIRED, "created_at", lambda i: "created_at")
    deals.reject(bad_amount, Reason.UNPARSEABLE_NUMBER, "amount",
                 lambda i: f"amount={records[i].get('amount')}")
    deals.reject(amount < 0, Reason.NEGATIVE_AMOUNT, "amount", lambda i: f"amount={amount[i]}")
    stage = [r.get("stage") for r in records]
    deals.reject([i for i, v in enumerate(stage) if v is not None and v not in stages], Reason.UNKNOWN_STAGE,
                 "stage", lambda i: f"stage={stage[i]}")
    fields = {c: strings([r.get(c) for r in records]) for c in DEAL_CATEGORICAL}
    for name, kind in meta.attributes.items():
        values = [r.get(name) for r in records]
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

    def __init__(self, records: list[dict]):
        self.ids = [r.get("deal_id") for r in records]
        self.rejected = np.zeros(len(records), dtype=bool)
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


def _payload_events(records: list[dict], stages: dict[str, int], created: np.ndarray, rejected: np.ndarray,
                    rejects: list[PayloadReject]) -> tuple[dict[str, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Stage history rows (or the one implied row of a deal sent without history), in the
    order of the validator's `stage_events` table."""
    # flat lists by comprehension, no per-row tuples: a 1,000-deal request has ~25,000 child rows
    histories = [rec.get("stage_history") or _implied_entry(rec) for rec in records]
    deal = [i for i, history in enumerate(histories) for _ in history]
    stage = [h.get("stage") for history in histories for h in history]
    entered = [h.get("entered_at") for history in histories for h in history]
    amount, bad_amount = child_numbers([h.get("amount") for history in histories for h in history])
    ecd = [h.get("expected_close_date") for history in histories for h in history]
    deal_pos = np.array(deal, dtype="int64")
    entered_at, bad_entered = checked_times(entered)
    expected_close, bad_ecd = checked_times(ecd)
    codes = np.array([stages.get(s, -1) for s in stage], dtype="int64")
    checks = [(rejected[deal_pos], Reason.DEAL_REJECTED, "deal_id",
               lambda row: f"deal_id={records[deal[row]].get('deal_id')}"),
              (bad_entered, Reason.UNPARSEABLE_DATE, "entered_at", lambda row: f"entered_at={entered[row]}"),
              (np.isnat(entered_at), Reason.MISSING_REQUIRED, "entered_at", lambda row: "entered_at"),
              (codes < 0, Reason.UNKNOWN_STAGE, "stage", lambda row: f"stage={stage[row]}"),
              (entered_at < created[deal_pos], Reason.EVENT_BEFORE_CREATE, "entered_at",
               lambda row: f"entered_at {pd.Timestamp(entered_at[row])}"),
              (bad_amount, Reason.UNPARSEABLE_NUMBER, "amount", lambda row: f"amount={amount[row]}"),
              (amount < 0, Reason.NEGATIVE_AMOUNT, "amount", lambda row: f"amount={amount[row]}"),
              (bad_ecd, Reason.UNPARSEABLE_DATE, "expected_close_date", lambda row: f"expected_close_date={ecd[row]}")]
    _reject_children(rejects, "stage_events", "stage_history", deal, records, checks)
    events = {"deal": deal_pos, "stage_index": codes, "entered_at": entered_at, "amount": amount,
              "expected_close_date": expected_close}
    return events, (deal_pos, entered_at)


IMPLIED_FIELDS = {"entered_at": "stage_entered_at", "amount": "amount", "expected_close_date": "expected_close_date",
                  "stage": "stage", "deal_id": "deal_id"}  # a field of the implied stage row -> the deal's field


def _reject_children(rejects: list[PayloadReject], table: str, nested: str, deal: list[int],
                     records: list[dict], checks: list[tuple]) -> None:
    """Child rows failing a check (mask, reason, field, detail), first reason wins. `deal`:
    each row's deal position, in request order; a deal's rows are its list in order, or
    the one row implied by a deal sent without history."""
    if not deal:
        return
    flagged = np.zeros(len(deal), dtype=bool)
    for mask, reason, field, detail in checks:
        if not mask.any():  # the usual case, in a microsecond
            continue
        for row in np.flatnonzero(mask & ~flagged).tolist():  # rejects are few, usually none
            flagged[row] = True
            i = deal[row]
            listed = bool(records[i].get(nested))
            index = row - bisect_left(deal, i) if listed else None
            rejects.append(PayloadReject(table, row, i, nested, index, field if listed else IMPLIED_FIELDS[field],
                                         records[i].get("deal_id"), reason, detail(row)))


def _implied_entry(rec: dict) -> list[dict]:
    """A deal sent without history entered its current stage at stage_entered_at (or creation)."""
    if rec.get("stage") is None:
        return []
    return [{"stage": rec.get("stage"), "entered_at": rec.get("stage_entered_at") or rec.get("created_at"),
             "amount": rec.get("amount"), "expected_close_date": rec.get("expected_close_date")}]


def _activity_known(records: list[dict]) -> np.ndarray | None:
    """Per deal, whether it sent its activities (a list, maybe empty): a deal without the key
    has unknown activities whatever the other deals of the request sent. None: all known."""
    known = np.fromiter(("activities" in rec for rec in records), dtype=bool, count=len(records))
    return None if known.all() else known


def _payload_activities(records: list[dict], created: np.ndarray, rejected: np.ndarray,
                        rejects: list[PayloadReject]) -> dict[str, np.ndarray] | None:
    if not any("activities" in rec for rec in records):
        return None  # no activity data at all: activity features are missing, not zero
    acts = [rec.get("activities") or () for rec in records]
    deal = [i for i, items in enumerate(acts) for _ in items]
    occurred = [act.get("occurred_at") for items in acts for act in items]
    deal_pos = np.array(deal, dtype="int64")
    occurred_at, bad = checked_times(occurred)
    checks = [(rejected[deal_pos], Reason.DEAL_REJECTED, "deal_id",
               lambda row: f"deal_id={records[deal[row]].get('deal_id')}"),
              (bad, Reason.UNPARSEABLE_DATE, "occurred_at", lambda row: f"occurred_at={occurred[row]}"),
              (np.isnat(occurred_at), Reason.MISSING_REQUIRED, "occurred_at", lambda row: "occurred_at"),
              (occurred_at < created[deal_pos], Reason.EVENT_BEFORE_CREATE, "occurred_at",
               lambda row: f"occurred_at {pd.Timestamp(occurred_at[row])}")]
    _reject_children(rejects, "activities", "activities", deal, records, checks)
    return {"deal": deal_pos, "occurred_at": occurred_at}

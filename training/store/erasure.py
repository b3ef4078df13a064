"""Forgetting a subject (an account or some deals) in the store, with an audit record.

The audit says what kind of subject, when, how many ids were named and how many rows
each table lost; never the ids themselves (keeping them would undo the erasure).
The store knows deals by id only: to forget an account, pass its deal ids (from the
canonical `deals` table) with the account id; forecasts grouped by `account_id` or by
`deal_id` lose the subject's rows too. `record_erasure` lets the `forget` command add
the canonical tables it cleaned to the same audit entry.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Mapping

import pandas as pd
import sqlalchemy as sa

from features.errors import LeadscoreError
from training.store.connection import Store
from training.store.schema import erasures as erasures_table
from training.store.schema import forecasts, scores, utc_now
from training.store.scores import chunks
from training.store.transactions import writing


@dataclass(frozen=True)
class Erasure:
    """One erasure request: its audit id, when, and the rows deleted per table."""

    erasure_id: str
    erased_at: datetime
    rows_deleted: dict[str, int]


def erase(store: Store, *, deal_ids: Iterable[str] = (), account_id: str | None = None) -> Erasure:
    """Delete the subject's score log rows and forecast rows in one transaction that also
    writes the audit rows (one per table, zero counts included)."""
    ids = chunks(deal_ids)
    if not ids and account_id is None:
        raise LeadscoreError("erase: name the subject: deal_ids and/or account_id")
    kind = "account" if account_id is not None else "deal"
    named = sum(len(chunk) for chunk in ids) + (account_id is not None)
    with writing(store.engine) as conn:
        rows = {"scores": sum(conn.execute(sa.delete(scores).where(scores.c.deal_id.in_(chunk))).rowcount
                              for chunk in ids),
                "forecasts": _erase_forecast_groups(conn, ids, account_id)}
        erasure = Erasure(uuid.uuid4().hex, utc_now(), rows)
        _write_audit(conn, erasure, kind, named, rows)
    return erasure


def record_erasure(store: Store, erasure: Erasure, subject_kind: str, subject_count: int,
                   rows_deleted: Mapping[str, int]) -> None:
    """Add tables cleaned outside the store (e.g. the canonical `deals`) to an erasure's audit."""
    with writing(store.engine) as conn:
        _write_audit(conn, erasure, subject_kind, subject_count, rows_deleted)


def erasures(store: Store) -> pd.DataFrame:
    """The erasure audit, oldest first."""
    query = sa.select(erasures_table).order_by(erasures_table.c.erasure_row)
    with store.engine.connect() as conn:
        return pd.DataFrame(conn.execute(query).mappings().all(), columns=[c.name for c in erasures_table.c])


def _erase_forecast_groups(conn: sa.Connection, ids: list[list[str]], account_id: str | None) -> int:
    """Forecast rows whose group is the subject (a forecast split by account or deal)."""
    deleted = 0
    if account_id is not None:
        deleted += conn.execute(sa.delete(forecasts).where(
            forecasts.c.group_column == "account_id", forecasts.c.group_value == str(account_id))).rowcount
    for chunk in ids:
        deleted += conn.execute(sa.delete(forecasts).where(
            forecasts.c.group_column == "deal_id", forecasts.c.group_value.in_(chunk))).rowcount
    return deleted


def _write_audit(conn: sa.Connection, erasure: Erasure, kind: str, named: int,
                 rows_deleted: Mapping[str, int]) -> None:
    if not rows_deleted:
        return
    conn.execute(sa.insert(erasures_table), [
        {"erasure_id": erasure.erasure_id, "erased_at": erasure.erased_at, "subject_kind": kind,
         "subject_count": int(named), "table_name": table, "rows_deleted": int(rows)}
        for table, rows in rows_deleted.items()])

"""The score log: every score served (`/score`, `leadscore score`), ids and outputs only.

`record_scores` (what `leadscore score` calls): one bulk INSERT in one transaction, and a
store outage never raises into the caller: it is counted on the `Store` and logged as one
WARNING line without any value (the driver's message could quote the rows). The service
writes through `score_log.ScoreLog` instead (a queue and a writer thread: off the request path).
"""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd
import sqlalchemy as sa

from training.store.connection import Store
from training.store.schema import naive_utc, utc_now
from training.store.schema import scores as scores_table
from training.store.transactions import writing

FIELDS = ("deal_id", "as_of", "model_name", "model_version", "probability", "score", "tier", "top_factors")
COLUMNS = ("score_id", *FIELDS, "created_at")
IN_CHUNK = 500  # ids per IN (...) list: far below every driver's parameter limit

log = logging.getLogger(__name__)


def record_scores(store: Store, rows: Sequence[Mapping[str, Any]]) -> int:
    """Log scored deals (each row: `FIELDS`; top_factors a list of factor names; as_of a
    datetime, naive = UTC); returns the rows written, 0 when the store failed (counted in
    `store.failed_score_writes`). A row missing a field is a bug and raises KeyError."""
    try:
        return insert_scores(store, rows)
    except sa.exc.SQLAlchemyError as exc:
        store.count_failed_score_write()
        log.warning("score log: %d score(s) not written (%s); failed writes since start: %d",
                    len(rows), type(getattr(exc, "orig", None) or exc).__name__, store.failed_score_writes)
        return 0


def insert_scores(store: Store, rows: Sequence[Mapping[str, Any]]) -> int:
    """`record_scores` without the safety net: store errors propagate (the service's
    `score_log.ScoreLog` counts them per outage)."""
    if not rows:
        return 0
    created_at = utc_now()
    records = [_record(row, created_at) for row in rows]
    with writing(store.engine) as conn:
        conn.execute(sa.insert(scores_table), records)
    return len(records)


def scores(store: Store, *, deal_ids: Iterable[str] | None = None, model_version: str | None = None,
           since: datetime | None = None) -> pd.DataFrame:
    """Logged scores (all, or of some deals / one model version / created at or after
    `since`), oldest first; columns `COLUMNS`."""
    base = sa.select(scores_table)
    if model_version is not None:
        base = base.where(scores_table.c.model_version == model_version)
    if since is not None:
        base = base.where(scores_table.c.created_at >= naive_utc(since))
    queries = [base] if deal_ids is None else [
        base.where(scores_table.c.deal_id.in_(chunk)) for chunk in chunks(deal_ids)]
    with store.engine.connect() as conn:
        found = [row for query in queries for row in conn.execute(query).mappings().all()]
    frame = pd.DataFrame(found, columns=list(COLUMNS))
    frame = frame.sort_values(["created_at", "score_id"], kind="stable", ignore_index=True)
    for col in ("as_of", "created_at"):
        frame[col] = pd.to_datetime(frame[col])
    return frame


def chunks(ids: Iterable[str], size: int = IN_CHUNK) -> list[list[str]]:
    """Distinct ids as str, in lists of at most `size` (for IN clauses)."""
    distinct = sorted({str(i) for i in ids})
    return [distinct[k:k + size] for k in range(0, len(distinct), size)]


def _record(row: Mapping[str, Any], created_at: datetime) -> dict[str, Any]:
    return {"deal_id": str(row["deal_id"]), "as_of": naive_utc(row["as_of"]),
            "model_name": str(row["model_name"]), "model_version": str(row["model_version"]),
            "probability": float(row["probability"]), "score": int(row["score"]), "tier": str(row["tier"]),
            "top_factors": [str(name) for name in row["top_factors"]], "created_at": created_at}

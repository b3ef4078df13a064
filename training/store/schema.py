"""The store's schema: its tables (what queries use) and the numbered migrations that build
them (what a database goes through), both here so one module owns the schema.

Migrations are explicit: `MIGRATIONS[k]` takes a database from version k to k + 1 and
declares its DDL with its own frozen table definitions, never the current `Table`s below
(those may change later; a migration never does). `migrate` applies the pending ones in
order, each in one transaction with its row in `schema_version`. A test checks that an
empty database migrated to the end has exactly the columns of the tables below. To change
the schema: edit the table here and append a migration that does the same change.

No table holds personal values: ids (deal, account in a forecast's group) are the only
request values stored, and the erasure audit counts rows without naming the subject.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable

import pandas as pd
import sqlalchemy as sa

from training.store.transactions import writing

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER keys only
NO_GROUP = ""  # group_column of a forecast that was not split by any column

METADATA = sa.MetaData()

schema_version = sa.Table(
    "schema_version", METADATA,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("description", sa.String(200), nullable=False),
    sa.Column("applied_at", sa.DateTime, nullable=False),
)

forecasts = sa.Table(
    "forecasts", METADATA,
    sa.Column("forecast_id", ID, primary_key=True, autoincrement=True),
    sa.Column("as_of", sa.DateTime, nullable=False),
    sa.Column("period_start", sa.DateTime, nullable=False),  # calendar start, even when as_of is inside
    sa.Column("period_end", sa.DateTime, nullable=False),  # exclusive
    sa.Column("freq", sa.String(16), nullable=False),
    sa.Column("group_column", sa.String(64), nullable=False),  # NO_GROUP when not split
    sa.Column("group_value", sa.String(200), nullable=False),  # "(all)" for the total
    sa.Column("p10", sa.Float, nullable=False),  # the rest of the period from as_of
    sa.Column("p50", sa.Float, nullable=False),
    sa.Column("p90", sa.Float, nullable=False),
    sa.Column("landing_p10", sa.Float),  # closed so far + the rest
    sa.Column("landing_p50", sa.Float),
    sa.Column("landing_p90", sa.Float),
    sa.Column("closed_so_far", sa.Float),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_version", sa.String(64), nullable=False),
    sa.Column("data_fingerprint", sa.String(64)),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Index("ix_forecasts_period", "freq", "group_column", "period_start"),
)

scores = sa.Table(
    "scores", METADATA,
    sa.Column("score_id", ID, primary_key=True, autoincrement=True),
    sa.Column("deal_id", sa.String(200), nullable=False),
    sa.Column("as_of", sa.DateTime, nullable=False),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_version", sa.String(64), nullable=False),
    sa.Column("probability", sa.Float, nullable=False),
    sa.Column("score", sa.Integer, nullable=False),
    sa.Column("tier", sa.String(32), nullable=False),
    sa.Column("top_factors", sa.JSON, nullable=False),  # list of factor names, no values
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Index("ix_scores_deal", "deal_id", "as_of"),
    sa.Index("ix_scores_version", "model_version", "created_at"),
)

erasures = sa.Table(
    "erasures", METADATA,
    sa.Column("erasure_row", ID, primary_key=True, autoincrement=True),
    sa.Column("erasure_id", sa.String(32), nullable=False),  # one id per request, a row per table
    sa.Column("erased_at", sa.DateTime, nullable=False),
    sa.Column("subject_kind", sa.String(16), nullable=False),  # "account" or "deal"
    sa.Column("subject_count", sa.Integer, nullable=False),  # how many ids were named
    sa.Column("table_name", sa.String(64), nullable=False),
    sa.Column("rows_deleted", sa.Integer, nullable=False),
)


# ---- migrations (frozen: never edit one that has shipped) ---------------------------

def _v1_forecast_track_record(conn: sa.Connection) -> None:
    md = sa.MetaData()
    sa.Table(
        "forecasts", md,
        sa.Column("forecast_id", ID, primary_key=True, autoincrement=True),
        sa.Column("as_of", sa.DateTime, nullable=False),
        sa.Column("period_start", sa.DateTime, nullable=False),
        sa.Column("period_end", sa.DateTime, nullable=False),
        sa.Column("freq", sa.String(16), nullable=False),
        sa.Column("group_column", sa.String(64), nullable=False),
        sa.Column("group_value", sa.String(200), nullable=False),
        *[sa.Column(name, sa.Float, nullable=False) for name in ("p10", "p50", "p90")],
        *[sa.Column(name, sa.Float) for name in ("landing_p10", "landing_p50", "landing_p90", "closed_so_far")],
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("data_fingerprint", sa.String(64)),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Index("ix_forecasts_period", "freq", "group_column", "period_start"),
    )
    md.create_all(conn)


def _v2_score_log_and_erasure_audit(conn: sa.Connection) -> None:
    md = sa.MetaData()
    sa.Table(
        "scores", md,
        sa.Column("score_id", ID, primary_key=True, autoincrement=True),
        sa.Column("deal_id", sa.String(200), nullable=False),
        sa.Column("as_of", sa.DateTime, nullable=False),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("probability", sa.Float, nullable=False),
        sa.Column("score", sa.Integer, nullable=False),
        sa.Column("tier", sa.String(32), nullable=False),
        sa.Column("top_factors", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Index("ix_scores_deal", "deal_id", "as_of"),
        sa.Index("ix_scores_version", "model_version", "created_at"),
    )
    sa.Table(
        "erasures", md,
        sa.Column("erasure_row", ID, primary_key=True, autoincrement=True),
        sa.Column("erasure_id", sa.String(32), nullable=False),
        sa.Column("erased_at", sa.DateTime, nullable=False),
        sa.Column("subject_kind", sa.String(16), nullable=False),
        sa.Column("subject_count", sa.Integer, nullable=False),
        sa.Column("table_name", sa.String(64), nullable=False),
        sa.Column("rows_deleted", sa.Integer, nullable=False),
    )
    md.create_all(conn)


Migration = Callable[[sa.Connection], None]
MIGRATIONS: list[tuple[str, Migration]] = [
    ("forecast track record (issue 13)", _v1_forecast_track_record),
    ("score log and erasure audit (issue 16)", _v2_score_log_and_erasure_audit),
]
LATEST_VERSION = len(MIGRATIONS)


def current_version(conn: sa.Connection) -> int:
    """The version a database is at (0 when it has no `schema_version` table)."""
    if not sa.inspect(conn).has_table(schema_version.name):
        return 0
    return int(conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0)


def migrate(engine: sa.Engine, target: int = LATEST_VERSION) -> int:
    """Apply the pending migrations up to `target`, in order, one transaction each;
    returns the version reached. Concurrent callers on PostgreSQL wait for each other."""
    for version in range(1, target + 1):
        with writing(engine) as conn:
            _lock(conn)
            schema_version.create(conn, checkfirst=True)
            if current_version(conn) >= version:
                continue
            description, step = MIGRATIONS[version - 1]
            step(conn)
            conn.execute(sa.insert(schema_version).values(
                version=version, description=description, applied_at=utc_now()))
    with engine.connect() as conn:
        return current_version(conn)


def _lock(conn: sa.Connection) -> None:
    """Serialise migrations across processes (PostgreSQL: a transaction-level advisory
    lock; SQLite takes its write lock at the first DDL statement)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(4215761)"))


def utc_now() -> datetime:
    """Now in UTC as a naive datetime: the store keeps every timestamp naive UTC."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def naive_utc(value) -> datetime:
    """A time as the store keeps it: naive UTC (aware converted, naive taken as UTC).
    Per value on purpose: ~5 us, where a pandas vector conversion costs ~0.6 ms even for
    one value, and `record_scores` is on the request path."""
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.to_pydatetime()

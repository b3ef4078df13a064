"""Reading the sources a mapping names (CSV, Parquet, a SQL query through SQLAlchemy),
restricted to the columns the mapping uses, so PII columns never reach a table, and
normalised as each source's `recode` says (before any join).

Each frame's index is the source row (for CSV: physical line - 2, see `features.csv_rows`);
malformed CSV lines are rejects of their source, never rows."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from features.csv_rows import csv_header, read_csv_rows
from features.errors import MappingError
from features.mapping import suggest
from features.mapping_spec import Mapping, RecodeSpec
from features.schema import REJECT_COLUMNS, empty_rejects


def read_sources(mapping: Mapping) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """Each used source, restricted to the columns the mapping names (never PII), and the
    rejects of each source's malformed lines (table = the source's name)."""
    frames, rejects = {}, {}
    try:
        for name, columns in _wanted_columns(mapping).items():
            spec = mapping.sources[name]
            header = _header(name, spec)
            recode = {col: f"sources.{name}.recode.{col}" for col in spec.recode}
            for col, where in {**recode, **columns}.items():
                if col not in header:
                    raise MappingError(f"{where}: source '{name}' has no column '{col}'{suggest(col, header)}")
            frame, rejects[name] = _read(name, spec, list(columns))
            frames[name] = recoded(frame, spec.recode)
    finally:
        _SQL_CACHE.clear()  # a query result is shared by the header check and the read, no longer
    return frames, rejects


def recoded(frame: pd.DataFrame, rules: dict[str, RecodeSpec]) -> pd.DataFrame:
    """Each recoded column stripped, re-cased and mapped through its `values` (as text;
    empty cells stay empty; values not in the map are kept)."""
    for col, rule in rules.items():
        if col not in frame:
            continue  # recoded but not used by any table
        text = frame[col].astype("string")
        if rule.strip:
            text = text.str.strip()
        if rule.case:
            text = getattr(text.str, rule.case)()
        if rule.values:
            text = text.replace(rule.values)
        frame[col] = text.astype(object).where(text.notna(), None)
    return frame


def _wanted_columns(m: Mapping) -> dict[str, dict[str, str]]:
    """source -> {column: where the mapping names it} (the first place, for messages)."""
    wanted: dict[str, dict[str, str]] = {}
    for table, spec in m.tables.items():
        joined = {c for join in spec.join for c in join.columns}
        refs = [(c, f"tables.{table}.columns.{k}") for k, c in spec.columns.items()]
        refs += [(a.column, f"tables.{table}.attributes.{k}") for k, a in spec.attributes.items()]
        if spec.outcome is not None and spec.outcome.column:
            refs.append((spec.outcome.column, f"tables.{table}.outcome.column"))
        left = wanted.setdefault(spec.source, {})
        for col, where in refs:
            if col not in joined:
                left.setdefault(col, where)
        for i, join in enumerate(spec.join):
            where = f"tables.{table}.join" + (f"[{i}]" if len(spec.join) > 1 else "")
            left.setdefault(join.key, f"{where}.key")
            right = wanted.setdefault(join.source, {})
            right.setdefault(join.right_key, f"{where}.right_key")
            for col in join.columns:
                right.setdefault(col, f"{where}.columns")
    return wanted


def _header(name: str, spec) -> list[str]:
    if spec.type == "sql":
        with _one_line_errors(name):
            return list(_query(spec.url, spec.query).columns)
    path = _existing(name, spec.path)
    if spec.type == "csv":
        return csv_header(path, spec.options, f"sources.{name}")
    try:
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise MappingError(f"sources.{name}: cannot read {path}: {str(exc).splitlines()[0]}") from None


_SQL_CACHE: dict[tuple[str, str], pd.DataFrame] = {}


def _read(name: str, spec, columns: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The source's rows (wanted columns only) and the rejects of its malformed lines."""
    with _one_line_errors(name):
        if spec.type == "csv":
            rows = read_csv_rows(_existing(name, spec.path), columns, spec.options, f"sources.{name}",
                                 multiline_values=spec.multiline_values)
            return rows.frame, rows.rejects.assign(table=name, deal_id=pd.NA)[REJECT_COLUMNS]
        if spec.type == "parquet":
            frame = pd.read_parquet(_existing(name, spec.path), columns=columns, **spec.options)
        else:
            frame = _query(spec.url, spec.query)[columns]  # PII and unused columns go here
        return frame, empty_rejects()


@contextmanager
def _one_line_errors(name: str) -> Iterator[None]:
    """Any reader or driver error as one `MappingError` line naming the source."""
    try:
        yield
    except MappingError:
        raise
    except Exception as exc:  # noqa: BLE001 - drivers raise their own types; the user needs one line
        raise MappingError(f"sources.{name}: cannot read ({type(exc).__name__}): "
                           f"{str(exc).strip().splitlines()[0]}") from None


def _query(url: str, query: str) -> pd.DataFrame:
    """Run a query once per ingestion (the header check and the read share the result)."""
    key = (url, query)
    if key not in _SQL_CACHE:
        import sqlalchemy as sa

        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                _SQL_CACHE[key] = pd.read_sql_query(sa.text(query), conn)
        finally:
            engine.dispose()
    return _SQL_CACHE[key]


def _existing(name: str, path: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise MappingError(f"sources.{name}: file not found: {p.resolve()} (check the path in the "
                           f"mapping and the environment variables it uses)")
    return p

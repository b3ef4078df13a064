"""Ingestion: read a CRM export (CSV / Parquet / SQL) through a YAML mapping, validate
it against the canonical contract and write the `--data DIR` layout with its rejects.

    ingest("features/mappings/olist.yaml", "data/olist")   # or: leadscore ingest --mapping ... --out ...
    ingest(mapping, "data/crm", append=True, exported_at="2024-06-01")   # a later export of the same CRM

Only the columns a mapping names are read, so PII columns never enter memory (for SQL
they are dropped straight after the query). Bad rows are rejects, never errors; a
mapping that does not fit the export is one `MappingError`. Joins (`features.joins`),
outcome rules (`features.outcomes`) and current-state exports (`features.snapshot_exports`)
each have their own module; this one chains them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from features.dataset import read_dataset, write_dataset
from features.errors import MappingError
from features.ingest_report import IngestReport
from features.joins import JOIN_COLUMNS, left_join, unmatched_notes
from features.leakage import leak_report
from features.mapping import load_mapping, outcome_join
from features.mapping_spec import DATE_COLUMNS, Mapping, TableSpec
from features.outcomes import derive_outcome
from features.parsing import parse_timestamps
from features.readers import read_sources
from features.schema import REJECT_COLUMNS, CanonicalData, DatasetMeta, empty_rejects
from features.snapshot_exports import (
    append_export,
    check_appendable,
    check_export_date,
    current_state,
    is_snapshot_only,
    snapshot_events,
    with_events,
)
from features.validation import validate

TABLE_ORDER = ("deals", "stage_events", "activities", "accounts")
MOSTLY_BAD = 0.5  # share of unparseable dates above which the format, not the rows, is wrong


def ingest(mapping_path: str | Path, out_dir: str | Path, append: bool = False,
           exported_at: str | pd.Timestamp | None = None) -> IngestReport:
    """Read the export a mapping describes, validate it, and write DIR in the canonical layout
    (with `append`, continue the dataset already in DIR with this later export)."""
    started = time.perf_counter()
    mapping = load_mapping(mapping_path)
    raw = build_tables(mapping, export_date(mapping, exported_at))
    data, rejects, clean, notes = canonical_data(mapping, raw)
    state = _current_state(data, raw, notes)
    if state is not None:
        events = snapshot_events(state, data.meta.stages, raw.exported_at)
        notes.append(f"{len(events):,} of {len(state):,} open deals: their current stage or expected close "
                     f"date is a stage event dated at the export ({raw.exported_at})")
        data.stage_events = with_events(data.stage_events, events)
    if append:
        data, rejects = _appended(out_dir, data, state, raw, rejects, notes)
    write_dataset(data, out_dir, rejects=rejects)
    outcomes = data.deals["outcome"].fillna("open").value_counts().to_dict()
    joins = pd.DataFrame(raw.joins, columns=JOIN_COLUMNS)
    return IngestReport(name=mapping.name, out_dir=Path(out_dir), counts=_counts(raw, clean, rejects),
                        rejects=rejects, outcomes={k: int(v) for k, v in outcomes.items()}, notes=notes,
                        seconds=time.perf_counter() - started, joins=joins,
                        warnings=unmatched_notes(joins) + leak_report(data))


def export_date(mapping: Mapping, option: str | pd.Timestamp | None) -> pd.Timestamp | None:
    """When the export was taken: the option, else the mapping's exported_at, else unknown."""
    value = option if option is not None else mapping.exported_at
    if value is None:
        return None
    try:
        return pd.Timestamp(value)
    except (ValueError, TypeError):
        raise MappingError(f"exported_at '{value}' is not a date: write YYYY-MM-DD") from None


def canonical_data(mapping: Mapping, raw: "RawTables") -> tuple[CanonicalData, pd.DataFrame, dict, list[str]]:
    """Validate the raw tables; won/lost rows of the history become outcomes, not stages.
    Returns (data, rejects, clean rows per table, notes)."""
    stages = mapping.stages
    declared_end = mapping.static or mapping.data_end is not None or raw.exported_at is not None
    meta = DatasetMeta(stages=stages.order + stages.won + stages.lost,
                       attributes={n: a.kind for n, a in mapping.tables["deals"].attributes.items()},
                       static=mapping.static, data_end=raw.data_end if declared_end else None,
                       name=mapping.name)
    closing = {**{s: "won" for s in stages.won}, **{s: "lost" for s in stages.lost}}
    result = validate(raw.tables["deals"], meta, stage_events=raw.tables.get("stage_events"),
                      activities=raw.tables.get("activities"), accounts=raw.tables.get("accounts"),
                      date_format="ISO8601", plausible=mapping.plausible.bounds(), closing=closing)
    data, notes = result.data, list(raw.notes)
    if not declared_end:
        data.meta.data_end = _clean_data_end(data)
    clean = {n: len(getattr(data, n)) for n in raw.tables}  # before won/lost rows are folded away
    data.meta.stages = list(stages.order)  # won/lost were accepted only to validate history
    if data.stage_events is not None:
        closing = data.stage_events["stage"].isin(stages.won + stages.lost)
        if closing.any():
            notes.append(f"{int(closing.sum()):,} won/lost rows of stage_events became deals.outcome "
                         f"and closed_at; they are not kept as stage rows")
        data.stage_events = data.stage_events.loc[~closing].reset_index(drop=True)
    rejects = pd.concat([*raw.read_rejects.values(), result.rejects, *raw.join_rejects], ignore_index=True)
    return data, rejects, clean, notes


def _clean_data_end(data: CanonicalData) -> pd.Timestamp | None:
    """The latest time of a clean row (a rejected row, e.g. one dated 9999, never sets it)."""
    try:
        return data.data_end
    except ValueError:  # no clean row has a time
        return None


def _current_state(data: CanonicalData, raw: "RawTables", notes: list[str]) -> pd.DataFrame | None:
    """The open deals' state at the export when the export says one (snapshot-only, or
    expected close dates on deals); the deals table then keeps neither column."""
    if data.meta.static:
        return None
    snapshot_only = is_snapshot_only(data.deals, data.stage_events)
    state = current_state(data.deals, data.stage_events, data.meta.stages, notes)
    if state is None:
        return None
    if snapshot_only:
        data.meta.stage_history = "snapshots"
    raw.exported_at = raw.exported_at if raw.exported_at is not None else data.data_end
    check_export_date(data.deals, raw.exported_at)
    data.deals = data.deals.drop(columns=[c for c in ("stage", "expected_close_date") if c in data.deals])
    return state


def _appended(out_dir: str | Path, data: CanonicalData, state: pd.DataFrame | None, raw: "RawTables",
              rejects: pd.DataFrame, notes: list[str]) -> tuple[CanonicalData, pd.DataFrame]:
    """The dataset in out_dir continued by this export, re-validated; rejects of both."""
    if not (Path(out_dir) / "deals.parquet").exists():
        raise MappingError(f"--append: {out_dir} holds no dataset yet: ingest the first export without --append")
    old = read_dataset(out_dir)
    at = raw.exported_at if raw.exported_at is not None else data.data_end
    check_appendable(old, data, at, str(out_dir))
    snapshot_only = "stage_events" not in raw.tables
    merged = append_export(old, data, state if snapshot_only else None, at, notes)
    result = validate(merged.deals, merged.meta, stage_events=merged.stage_events,
                      activities=merged.activities, accounts=merged.accounts)
    path = Path(out_dir) / "rejects.csv"
    stored = pd.read_csv(path, dtype={c: "int64" if c == "row" else "string" for c in REJECT_COLUMNS}) \
        if path.exists() else empty_rejects()
    both = pd.concat([stored, rejects.astype({c: "string" for c in REJECT_COLUMNS if c != "row"}),
                      result.rejects], ignore_index=True)
    return result.data, both.drop_duplicates(ignore_index=True)  # the same export twice: one set of rejects


def _counts(raw: "RawTables", clean: dict[str, int], rejects: pd.DataFrame) -> pd.DataFrame:
    rejected = rejects.groupby("table").size() if len(rejects) else pd.Series(dtype="int64")
    rows = [(name, len(table) + len(raw.read_rejects.get(name, ())), clean[name], int(rejected.get(name, 0)))
            for name, table in raw.tables.items()]
    for name, (rows_in, kept) in raw.join_counts.items():
        rows.append((f"{name} (joined into deals)", rows_in, kept, rows_in - kept))
    return pd.DataFrame(rows, columns=["table", "rows_in", "clean", "rejected"])


# ----------------------------------------------------------------------------- reading

@dataclass
class RawTables:
    """Canonical-named tables before validation, plus what the joins found and rejected."""

    tables: dict[str, pd.DataFrame]
    exported_at: pd.Timestamp | None = None
    join_rejects: list[pd.DataFrame] = field(default_factory=list)
    join_counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # source -> (rows, clean)
    joins: list[dict] = field(default_factory=list)  # one report row per join (features.joins)
    malformed: dict[str, pd.DataFrame] = field(default_factory=dict)  # source -> its malformed lines
    read_rejects: dict[str, pd.DataFrame] = field(default_factory=dict)  # table -> its source's malformed lines
    data_end: pd.Timestamp | None = None
    notes: list[str] = field(default_factory=list)


def build_tables(mapping: Mapping, exported_at: pd.Timestamp | None = None) -> RawTables:
    """Read every source the mapping uses and shape it into canonical-named tables."""
    frames, malformed = read_sources(mapping)
    raw = RawTables(tables={}, exported_at=exported_at, malformed=malformed)
    # stage history first: an outcome "from stage" may take its close date from it
    for name in ("stage_events", "activities", "accounts", "deals"):
        spec = mapping.tables.get(name)
        if spec is not None:
            raw.tables[name] = _build_table(name, spec, mapping, frames, raw)
            raw.read_rejects[name] = malformed[spec.source].assign(table=name)
    raw.tables = {n: raw.tables[n] for n in TABLE_ORDER if n in raw.tables}
    if mapping.static:
        return raw
    if raw.exported_at is not None and raw.data_end is not None and raw.data_end < raw.exported_at:
        raise MappingError(f"data_end {raw.data_end} is before the export date {raw.exported_at}: "
                           f"drop data_end or move it later")
    return raw


# ----------------------------------------------------------------------------- shaping

def _build_table(table: str, spec: TableSpec, m: Mapping, frames: dict, raw: RawTables) -> pd.DataFrame:
    nulls = m.null_values + spec.null_values
    rows = _blank_placeholders(frames[spec.source], nulls)
    rows = rows.assign(_row=rows.index.to_numpy(dtype="int64")).reset_index(drop=True)  # the source row
    rows, joined = _joined(rows, spec, m, frames, nulls, raw)
    out = pd.DataFrame({"_row": rows["_row"].to_numpy()})
    for canonical, col in spec.columns.items():
        out[canonical] = rows[col].to_numpy()
    for name, attr in spec.attributes.items():
        out[name] = rows[attr.column].to_numpy()
    dates = {c: _parse_dates(out[c], spec.format_for(c), spec.dayfirst, f"tables.{table}.{c}", spec.columns[c])
             for c in out.columns if c in DATE_COLUMNS}
    if table == "deals":
        raw.data_end = derive_outcome(out, rows, joined, dates, m, raw.tables, raw.notes, raw.exported_at)
    for col, (parsed, bad, fmt) in dates.items():
        out[col] = _for_validator(parsed, bad, out[col], fmt)
    return out


def _joined(rows: pd.DataFrame, spec: TableSpec, m: Mapping, frames: dict, nulls: list[str], raw: RawTables
            ) -> tuple[pd.DataFrame, pd.Series | None]:
    """Every join of the table applied in turn; returns the rows and, for an outcome from a
    join, which rows found a row in that join's file."""
    won_join = outcome_join(spec) if spec.outcome is not None and spec.outcome.from_ == "join" else None
    matched = None
    for join in spec.join:
        result = left_join(rows, join, _blank_placeholders(frames[join.source], nulls), spec.source,
                           outcome_join=join is won_join)
        rows = result.rows
        bad_lines = raw.malformed.get(join.source, empty_rejects())
        raw.join_rejects.extend([bad_lines, result.rejects])
        raw.join_counts[join.source] = (result.rows_in + len(bad_lines), result.clean)
        raw.joins.append(result.report)
        if join is won_join:
            matched = result.matched
    return rows, matched


def _blank_placeholders(frame: pd.DataFrame, nulls: list[str]) -> pd.DataFrame:
    frame = frame.copy()
    if not nulls:
        return frame
    for col in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[col]) and not pd.api.types.is_datetime64_any_dtype(frame[col]):
            text = frame[col].astype("string").str.strip()
            frame[col] = frame[col].mask(text.isin(nulls))
    return frame


def _parse_dates(values: pd.Series, fmt: str | None, dayfirst: bool, where: str, source_col: str
                 ) -> tuple[pd.Series, pd.Series, str | None]:
    """Parse one date column; a format that fails on most of the column is a mapping error."""
    fmt_arg = None if fmt and fmt.upper() == "MIXED" else fmt
    parsed, bad = parse_timestamps(pd.Series(values), fmt_arg, dayfirst)
    filled = int(pd.Series(values).notna().sum())
    if filled and bad.sum() > MOSTLY_BAD * filled:
        example = pd.Series(values)[bad].iloc[0]
        shown = f"format '{fmt}'" if fmt else "inferred dates" + (" (dayfirst)" if dayfirst else "")
        raise MappingError(f"{where}: {shown} does not fit column '{source_col}' (e.g. '{example}'): "
                           f"{int(bad.sum()):,} of {filled:,} values failed, most of the column, so "
                           f"the format is wrong; fix date_format/date_formats")
    return parsed, bad, fmt


def _for_validator(parsed: pd.Series, bad: pd.Series, original: pd.Series, fmt: str | None) -> pd.Series:
    """Typed dates, or ISO text with each unparseable cell kept as written so the validator
    rejects exactly those rows with reason unparseable_date and the value in the detail."""
    if not bad.any():
        return parsed
    text = parsed.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").astype(object)
    note = f" (not {fmt})" if fmt else ""
    text[bad.to_numpy()] = (pd.Series(original)[bad].astype(str) + note).to_numpy()
    return text.where(parsed.notna() | bad, None)

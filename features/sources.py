"""Ingestion: read a CRM export (CSV / Parquet / SQL) through a YAML mapping, validate
it against the canonical contract and write the `--data DIR` layout with its rejects.

    ingest("features/mappings/olist.yaml", "data/olist")   # or: leadscore ingest --mapping ... --out ...

Only the columns a mapping names are read, so PII columns never enter memory (for SQL
they are dropped straight after the query). Bad rows are rejects, never errors; a
mapping that does not fit the export is one `MappingError`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from rich.console import Group
from rich.table import Table

from features.dataset import write_dataset
from features.errors import MappingError
from features.mapping import DATE_COLUMNS, Mapping, TableSpec, load_mapping
from features.readers import read_sources
from features.schema import DatasetMeta, Reason, parse_timestamps, validate

TABLE_ORDER = ("deals", "stage_events", "activities", "accounts")
MOSTLY_BAD = 0.5  # share of unparseable dates above which the format, not the rows, is wrong


@dataclass
class IngestReport:
    """What an ingestion did: rows per table, rejects per reason, where it wrote."""

    name: str
    out_dir: Path
    counts: pd.DataFrame  # table, rows_in, clean, rejected (rows_in == clean + rejected)
    rejects: pd.DataFrame
    outcomes: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def reason_counts(self) -> pd.DataFrame:
        """Rejected rows per (table, reason), with one example detail each."""
        if self.rejects.empty:
            return pd.DataFrame(columns=["table", "reason", "rows", "example"])
        g = self.rejects.groupby(["table", "reason"], sort=False)
        out = g.size().rename("rows").to_frame().join(g["detail"].first().rename("example"))
        return out.reset_index().sort_values("rows", ascending=False, kind="stable")

    def summary(self) -> Group:
        """Rich renderable: rows read / clean / rejected per table, then rejects by reason."""
        counts = Table(title=f"ingest {self.name} -> {self.out_dir}", title_justify="left")
        for col in ("table", "rows read", "clean", "rejected"):
            counts.add_column(col, justify="left" if col == "table" else "right")
        for row in self.counts.itertuples(index=False):
            counts.add_row(row.table, f"{row.rows_in:,}", f"{row.clean:,}", f"{row.rejected:,}")
        parts = [counts]
        reasons = self.reason_counts()
        if len(reasons):
            by_reason = Table(title="rejects by reason (rows in rejects.csv)", title_justify="left")
            for col in ("table", "reason", "rows", "example"):
                by_reason.add_column(col, justify="right" if col == "rows" else "left")
            for row in reasons.itertuples(index=False):
                by_reason.add_row(row.table, row.reason, f"{row.rows:,}", str(row.example)[:70])
            parts.append(by_reason)
        outcome = ", ".join(f"{k} {v:,}" for k, v in self.outcomes.items())
        parts.append(f"deals: {outcome}; {self.seconds:.2f} s")
        parts.extend(f"note: {n}" for n in self.notes)
        return Group(*parts)


def ingest(mapping_path: str | Path, out_dir: str | Path) -> IngestReport:
    """Read the export a mapping describes, validate it, and write DIR in the canonical layout."""
    started = time.perf_counter()
    mapping = load_mapping(mapping_path)
    raw = build_tables(mapping)
    meta = DatasetMeta(stages=mapping.stages.order + mapping.stages.won + mapping.stages.lost,
                       attributes={n: a.kind for n, a in mapping.tables["deals"].attributes.items()},
                       static=mapping.static, data_end=raw.data_end, name=mapping.name)
    result = validate(raw.tables["deals"], meta, stage_events=raw.tables.get("stage_events"),
                      activities=raw.tables.get("activities"), accounts=raw.tables.get("accounts"),
                      date_format="ISO8601")
    data, notes = result.data, list(raw.notes)
    clean = {n: len(getattr(data, n)) for n in raw.tables}  # before won/lost rows are folded away
    data.meta.stages = list(mapping.stages.order)  # won/lost were accepted only to validate history
    if data.stage_events is not None:
        closing = data.stage_events["stage"].isin(mapping.stages.won + mapping.stages.lost)
        if closing.any():
            notes.append(f"{int(closing.sum()):,} won/lost rows of stage_events became deals.outcome "
                         f"and closed_at; they are not kept as stage rows")
        data.stage_events = data.stage_events.loc[~closing].reset_index(drop=True)
    rejects = pd.concat([result.rejects, *raw.join_rejects], ignore_index=True)
    write_dataset(data, out_dir, rejects=rejects)
    counts = _counts(raw, clean, rejects)
    outcomes = data.deals["outcome"].fillna("open").value_counts().to_dict()
    return IngestReport(name=mapping.name, out_dir=Path(out_dir), counts=counts, rejects=rejects,
                        outcomes={k: int(v) for k, v in outcomes.items()}, notes=notes,
                        seconds=time.perf_counter() - started)


def _counts(raw: "RawTables", clean: dict[str, int], rejects: pd.DataFrame) -> pd.DataFrame:
    rejected = rejects.groupby("table").size() if len(rejects) else pd.Series(dtype="int64")
    rows = [(name, len(table), clean[name], int(rejected.get(name, 0))) for name, table in raw.tables.items()]
    for name, (rows_in, matched) in raw.join_counts.items():
        rows.append((f"{name} (joined into deals)", rows_in, matched, int(rejected.get(name, 0))))
    return pd.DataFrame(rows, columns=["table", "rows_in", "clean", "rejected"])


# ----------------------------------------------------------------------------- reading

@dataclass
class RawTables:
    """Canonical-named tables before validation, plus what the joins rejected."""

    tables: dict[str, pd.DataFrame]
    join_rejects: list[pd.DataFrame] = field(default_factory=list)
    join_counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # source -> (rows, matched)
    data_end: pd.Timestamp | None = None
    notes: list[str] = field(default_factory=list)


def build_tables(mapping: Mapping) -> RawTables:
    """Read every source the mapping uses and shape it into canonical-named tables."""
    frames = read_sources(mapping)
    raw = RawTables(tables={})
    # stage history first: an outcome "from stage" may take its close date from it
    for name in ("stage_events", "activities", "accounts", "deals"):
        spec = mapping.tables.get(name)
        if spec is not None:
            raw.tables[name] = _build_table(name, spec, mapping, frames, raw)
    raw.tables = {n: raw.tables[n] for n in TABLE_ORDER if n in raw.tables}
    return raw


# ----------------------------------------------------------------------------- shaping

def _build_table(table: str, spec: TableSpec, m: Mapping, frames: dict, raw: RawTables) -> pd.DataFrame:
    nulls = m.null_values + spec.null_values
    rows = _blank_placeholders(frames[spec.source], nulls)
    rows["_row"] = range(len(rows))
    joined = None
    if spec.join is not None:
        rows, joined = _left_join(rows, spec, _blank_placeholders(frames[spec.join.source], nulls), raw)
    out = pd.DataFrame({"_row": rows["_row"].to_numpy()})
    for canonical, col in spec.columns.items():
        out[canonical] = rows[col].to_numpy()
    for name, attr in spec.attributes.items():
        out[name] = rows[attr.column].to_numpy()
    dates = {c: _parse_dates(out[c], spec.format_for(c), spec.dayfirst, f"tables.{table}.{c}", spec.columns[c])
             for c in out.columns if c in DATE_COLUMNS}
    if table == "deals":
        _derive_outcome(out, rows, joined, dates, spec, m, raw)
    for col, (parsed, bad, fmt) in dates.items():
        out[col] = _for_validator(parsed, bad, out[col], fmt)
    return out


def _blank_placeholders(frame: pd.DataFrame, nulls: list[str]) -> pd.DataFrame:
    frame = frame.copy()
    if not nulls:
        return frame
    for col in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[col]) and not pd.api.types.is_datetime64_any_dtype(frame[col]):
            text = frame[col].astype("string").str.strip()
            frame[col] = frame[col].mask(text.isin(nulls))
    return frame


def _left_join(rows: pd.DataFrame, spec: TableSpec, right: pd.DataFrame, raw: RawTables
               ) -> tuple[pd.DataFrame, pd.Series]:
    """Left join at most one right row per key; other right rows become rejects."""
    join = spec.join
    key = right[join.right_key].astype("string").str.strip()
    right = right.assign(_key=key, _right_row=range(len(right)))
    left_keys = rows[join.key].astype("string").str.strip()
    missing, dup = key.isna(), key.duplicated(keep="first") & key.notna()
    orphan = ~missing & ~dup & ~key.isin(left_keys.dropna())
    parts = [_join_rejects(right, mask, join.source, reason, detail)
             for mask, reason, detail in [(missing, Reason.MISSING_REQUIRED, join.right_key),
                                          (dup, Reason.DUPLICATE_ID, "second row for this key"),
                                          (orphan, Reason.UNKNOWN_DEAL, "no row with this key in " + spec.source)]]
    raw.join_rejects.extend(p for p in parts if len(p))
    good = right.loc[~(missing | dup | orphan), ["_key", *join.columns]]
    merged = rows.assign(_key=left_keys).merge(good.assign(_joined=True), on="_key", how="left",
                                                validate="many_to_one")
    joined = merged["_joined"].fillna(False).astype(bool)
    raw.join_counts[join.source] = (len(right), int(len(good)))
    return merged.drop(columns=["_key", "_joined"]), joined


def _join_rejects(right: pd.DataFrame, mask: pd.Series, table: str, reason: str, detail: str) -> pd.DataFrame:
    return pd.DataFrame({"table": table, "row": right.loc[mask, "_right_row"].to_numpy(dtype="int64"),
                         "deal_id": right.loc[mask, "_key"].to_numpy(), "reason": reason, "detail": detail})


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


# ----------------------------------------------------------------------------- outcomes

def _derive_outcome(out: pd.DataFrame, rows: pd.DataFrame, joined: pd.Series | None, dates: dict,
                    spec: TableSpec, m: Mapping, raw: RawTables) -> None:
    """Fill out['outcome'] (and closed_at) as the mapping's outcome rule says."""
    rule = spec.outcome
    created = dates["created_at"][0] if "created_at" in dates else None
    raw.data_end = _data_end(m, dates, raw)
    if rule is None:
        return
    if rule.from_ == "column":
        out["outcome"] = _values_to_outcome(rows[rule.column], rule.won, rule.lost, rule.column)
    elif rule.from_ == "stage":
        _outcome_from_stage(out, dates, m, raw)
    else:
        outcome = pd.Series(pd.NA, index=out.index, dtype="string").mask(joined.to_numpy(), "won")
        if m.static:
            outcome = outcome.fillna("lost")
        elif rule.lost_after_days is not None and raw.data_end is not None:
            give_up = created + pd.Timedelta(days=rule.lost_after_days)
            lost = outcome.isna() & (give_up <= raw.data_end)
            outcome = outcome.mask(lost, "lost")
            closed = dates["closed_at"][0].mask(lost, give_up)
            dates["closed_at"] = (closed, dates["closed_at"][1], dates["closed_at"][2])
            raw.notes.append(f"{int(lost.sum()):,} deals without a row in '{spec.join.source}' are lost "
                             f"{rule.lost_after_days} days after creation (data end {raw.data_end})")
        out["outcome"] = outcome.to_numpy()


def _values_to_outcome(values: pd.Series, won: list, lost: list, column: str) -> pd.Series:
    """won/lost by value; other non-empty values pass through so the validator rejects them."""
    key = _normalise(values)
    won_keys, lost_keys = set(_normalise(pd.Series(won, dtype=object))), set(_normalise(pd.Series(lost, dtype=object)))
    if not key.isin(won_keys).any():
        seen = ", ".join(sorted(values.astype("string").str.strip().dropna().unique())[:10])
        raise MappingError(f"outcome.won: value(s) {won} never occur in column '{column}' "
                           f"(values seen: {seen})")
    text = values.astype("string").str.strip()
    return text.mask(key.isin(won_keys), "won").mask(key.isin(lost_keys), "lost").to_numpy()


def _normalise(values: pd.Series) -> pd.Series:
    """'1', 1, 1.0 and ' 1 ' compare equal; other values compare as stripped text."""
    text = values.astype("string").str.strip()
    number = pd.to_numeric(text, errors="coerce")
    return text.where(number.isna(), number.astype("float64").astype("string"))


def _outcome_from_stage(out: pd.DataFrame, dates: dict, m: Mapping, raw: RawTables) -> None:
    won, lost = set(m.stages.won), set(m.stages.lost)
    events = raw.tables.get("stage_events")
    seen = set()
    if "stage" in out:
        stage = out["stage"].astype("string").str.strip()
        seen |= set(stage.dropna())
        outcome = pd.Series(pd.NA, index=out.index, dtype="string").mask(stage.isin(won), "won") \
            .mask(stage.isin(lost), "lost")
        out["stage"] = stage.mask(stage.isin(won | lost)).to_numpy()  # closed deals have no open stage
    if events is not None:
        seen |= set(events["stage"].astype("string").str.strip().dropna())
    if not won & seen:
        where = "the deals' stage column" + (" or stage_events" if events is not None else "")
        raise MappingError(f"stages.won: none of {sorted(won)} occurs in {where} "
                           f"(values seen: {', '.join(sorted(seen)[:12])})")
    last = _last_closing_event(events, won, lost) if events is not None else None
    if "stage" not in out:
        ids = out["deal_id"].astype("string").str.strip()
        outcome = pd.Series(ids.map(last["outcome"]) if last is not None else pd.NA, dtype="string")
    out["outcome"] = outcome.to_numpy()
    if "closed_at" not in dates and last is not None:
        ids = out["deal_id"].astype("string").str.strip()
        closed = pd.Series(ids.map(last["entered_at"]).to_numpy(), index=out.index).astype("datetime64[us]")
        closed = closed.where(outcome.notna().to_numpy())
        out["closed_at"] = closed
        dates["closed_at"] = (closed, pd.Series(False, index=out.index), None)


def _last_closing_event(events: pd.DataFrame, won: set, lost: set) -> pd.DataFrame:
    """Per deal, the last won/lost row of its stage history: outcome and when it happened."""
    stage = events["stage"].astype("string").str.strip()
    entered = parse_timestamps(events["entered_at"], "ISO8601")[0]
    rows = pd.DataFrame({"deal_id": events["deal_id"].astype("string").str.strip(), "stage": stage,
                         "entered_at": entered})
    rows = rows[stage.isin(won | lost) & entered.notna()].sort_values("entered_at", kind="stable")
    last = rows.drop_duplicates("deal_id", keep="last").set_index("deal_id")
    return pd.DataFrame({"outcome": last["stage"].isin(won).map({True: "won", False: "lost"}),
                         "entered_at": last["entered_at"]})


def _data_end(m: Mapping, dates: dict, raw: RawTables) -> pd.Timestamp | None:
    if m.data_end:
        return pd.Timestamp(m.data_end)
    stamps = [p.max() for p, _bad, _fmt in dates.values()]
    for table, col in (("stage_events", "entered_at"), ("activities", "occurred_at")):
        if table in raw.tables and col in raw.tables[table]:
            stamps.append(parse_timestamps(raw.tables[table][col], "ISO8601")[0].max())
    stamps = [s for s in stamps if pd.notna(s)]
    return max(stamps) if stamps else None

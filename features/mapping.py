"""Loading the YAML mapping that turns a CRM export into the canonical tables: reading,
environment expansion and the checks that need no data (the model is `features.mapping_spec`).

The format is documented in docs/mapping.md. Every problem becomes one
`MappingError` whose single-line message names the problem and how to fix it.
"""
from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

import pandas as pd
import yaml
from pydantic import ValidationError

from features.errors import MappingError
from features.mapping_spec import CANONICAL_COLUMNS, CASES, DATE_COLUMNS, SNAKE, JoinSpec, Mapping, TableSpec

_ENV = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")

def load_mapping(path: str | Path) -> Mapping:
    """Read, expand `${VAR:-default}` in source paths/URLs, and check a mapping file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise MappingError(f"mapping file {path} not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise MappingError(f"mapping {path} is not readable YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise MappingError(f"mapping {path} must be a YAML mapping (key: value), not {type(raw).__name__}")
    try:
        mapping = Mapping.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise MappingError(f"mapping {path}: {loc}: {err['msg']}") from None
    for name, src in mapping.sources.items():
        for attr in ("path", "url"):
            value = getattr(src, attr)
            if value is not None:
                setattr(src, attr, expand_env(value, f"sources.{name}.{attr}"))
    check_mapping(mapping)
    return mapping


def expand_env(value: str, where: str) -> str:
    """`${VAR}` and `${VAR:-default}` from the environment (empty counts as unset)."""

    def sub(m: re.Match) -> str:
        var, default = m.group(1), m.group(2)
        if os.environ.get(var):
            return os.environ[var]
        if default is not None:
            return default
        raise MappingError(f"{where} uses ${{{var}}} but {var} is not set: export it or write "
                           f"${{{var}:-default}}")

    return _ENV.sub(sub, value)


def check_mapping(m: Mapping) -> None:
    """Checks that need no data: names, references, formats, outcome rules."""
    if "deals" not in m.tables:
        raise MappingError("mapping has no 'tables.deals' section: every export needs deals")
    pii = set(m.pii)
    for table, spec in m.tables.items():
        _check_source_name(m, spec.source, f"tables.{table}.source")
        _check_joins(m, table, spec)
        _check_lost_after(m, table, spec)
        _check_canonical_names(table, spec)
        _check_formats(table, spec)
        used = list(spec.columns.values()) + [a.column for a in spec.attributes.values()]
        for col in set(used) & pii:
            raise MappingError(f"column '{col}' is listed under 'pii' and also mapped in tables.{table}: "
                               f"PII never reaches the output, remove one of the two")
        if spec.outcome is not None and table != "deals":
            raise MappingError(f"tables.{table}.outcome: only deals have an outcome")
        if spec.attributes and table not in ("deals", "accounts"):
            raise MappingError(f"tables.{table}.attributes: only deals and accounts have attributes")
    _check_outcome(m)
    _check_recode(m)
    _check_export_dates(m)
    _check_plausible(m)


def _check_lost_after(m: Mapping, table: str, spec: TableSpec) -> None:
    """`outcome.lost_after_days` per stage names open stages, and needs a deal stage."""
    days = spec.outcome.lost_after_days if spec.outcome is not None else None
    if not isinstance(days, dict):
        return
    where = f"tables.{table}.outcome.lost_after_days"
    if spec.outcome.from_ == "join":
        raise MappingError(f"{where}: per stage needs 'from: column' or 'from: stage' (a join outcome has no stage)")
    unknown = sorted(set(days) - set(m.stages.order))
    if unknown:
        raise MappingError(f"{where}: {unknown} not in stages.order {m.stages.order}")
    if "stage" not in spec.columns:
        raise MappingError(f"{where}: per stage needs a mapped deal 'stage' column")


def _check_joins(m: Mapping, table: str, spec: TableSpec) -> None:
    if spec.join and table != "deals":
        raise MappingError(f"tables.{table}.join: only deals take joins (dimension files of the deals table)")
    seen: dict[str, str] = {}
    for i, join in enumerate(spec.join):
        where = f"tables.{table}.join[{i}]" if len(spec.join) > 1 else f"tables.{table}.join"
        _check_source_name(m, join.source, f"{where}.source")
        if join.source == spec.source:
            raise MappingError(f"{where}.source: '{join.source}' is the table's own source; a join "
                               f"brings columns from another file")
        for col in join.columns:
            if col in seen:
                raise MappingError(f"{where}.columns: '{col}' is already taken from '{seen[col]}': "
                                   f"list each joined column under one join only")
            seen[col] = join.source


def _check_recode(m: Mapping) -> None:
    for name, src in m.sources.items():
        for col, rule in src.recode.items():
            where = f"sources.{name}.recode.{col}"
            if rule.case is not None and rule.case not in CASES:
                raise MappingError(f"{where}.case: '{rule.case}' is not a case{suggest(rule.case, list(CASES))}; "
                                   f"use one of {', '.join(CASES)}")
            if rule.is_noop():
                raise MappingError(f"{where}: nothing to do: give 'strip: true', 'case: lower' "
                                   f"(or upper/casefold) or a 'values:' map")


def _check_export_dates(m: Mapping) -> None:
    dates = {}
    for key in ("exported_at", "data_end"):
        value = getattr(m, key)
        if value is None:
            continue
        try:
            dates[key] = pd.Timestamp(value)
        except (ValueError, TypeError):
            raise MappingError(f"{key}: '{value}' is not a date: write YYYY-MM-DD (or an ISO time)") from None
    if "exported_at" in dates and m.static:
        raise MappingError("exported_at: a static export has no dates to place it among; remove it or "
                           "set static: false")
    if len(dates) == 2 and dates["data_end"] < dates["exported_at"]:
        raise MappingError(f"data_end {m.data_end} is before exported_at {m.exported_at}: the export "
                           f"knows facts up to its own date; drop data_end or move it later")


def _check_plausible(m: Mapping) -> None:
    for key in ("earliest", "latest"):
        value = getattr(m.plausible, key)
        try:
            pd.Timestamp(value) if value is not None else None
        except (ValueError, TypeError):
            raise MappingError(f"plausible.{key}: '{value}' is not a date: write YYYY-MM-DD") from None
    bounds = m.plausible.bounds()
    if bounds.earliest >= bounds.latest:
        raise MappingError(f"plausible: earliest {bounds.earliest:%Y-%m-%d} is not before latest "
                           f"{bounds.latest:%Y-%m-%d}: widen the window")


def _check_source_name(m: Mapping, name: str, where: str) -> None:
    if name not in m.sources:
        raise MappingError(f"{where}: unknown source '{name}'{suggest(name, list(m.sources))}")


def _check_canonical_names(table: str, spec: TableSpec) -> None:
    allowed = CANONICAL_COLUMNS[table]
    for name in spec.columns:
        if name not in allowed:
            raise MappingError(f"tables.{table}.columns: '{name}' is not a canonical column of {table}"
                               f"{suggest(name, allowed)}; extra columns go under 'attributes'")
    for name in spec.attributes:
        if not SNAKE.match(name):
            raise MappingError(f"tables.{table}.attributes: name '{name}' must be snake_case "
                               f"(lower-case letters, digits, _), e.g. '{snake_case(name)}'")
        if name in allowed or name in ("stage", "outcome"):
            raise MappingError(f"tables.{table}.attributes: '{name}' is a canonical column; "
                               f"map it under 'columns' instead")


def _check_formats(table: str, spec: TableSpec) -> None:
    formats = dict(spec.date_formats)
    if spec.date_format:
        formats["date_format"] = spec.date_format
    for col, fmt in formats.items():
        if col != "date_format" and col not in DATE_COLUMNS:
            raise MappingError(f"tables.{table}.date_formats: '{col}' is not a date column "
                               f"(date columns: {', '.join(sorted(DATE_COLUMNS))})")
        if "%" not in fmt and fmt.upper() not in ("ISO8601", "MIXED"):
            raise MappingError(f"tables.{table}: date format '{fmt}' for {col} has no strftime "
                               f"directive (write e.g. '%d-%m-%Y' or 'ISO8601')")


def _check_outcome(m: Mapping) -> None:
    deals = m.tables["deals"]
    rule = deals.outcome
    if rule is None:
        return
    if "outcome" in deals.columns:
        raise MappingError("tables.deals: map 'outcome' under 'columns' or derive it with "
                           "'outcome', not both")
    if rule.from_ == "stage":
        if not m.stages.won:
            raise MappingError("outcome from stage needs stages.won: list the stage value(s) "
                               "that mean won (won/lost are not open stages)")
        has_stage = "stage" in deals.columns or "stage_events" in m.tables
        if not has_stage:
            raise MappingError("outcome from stage needs a deals 'stage' column or a stage_events table")
        if "closed_at" not in deals.columns and "stage_events" not in m.tables:
            raise MappingError("outcome from stage needs a closed_at column or a stage_events table "
                               "to date the close")
    if rule.from_ == "join":
        if not deals.join:
            raise MappingError("outcome from join needs tables.deals.join (the file of closed deals)")
        outcome_join(deals)
        if not m.static and "closed_at" not in deals.columns:
            raise MappingError("outcome from join needs tables.deals.columns.closed_at "
                               "(the close date column of the joined file)")
    elif rule.source is not None:
        raise MappingError(f"tables.deals.outcome.source: only an outcome 'from: join' names a source "
                           f"(this one is from: {rule.from_}); remove it")
    if rule.close_date_is_expected_while_open:
        if rule.from_ == "join":
            raise MappingError("outcome.close_date_is_expected_while_open: with 'from: join' the close "
                               "date comes from the joined file of closed deals; remove the rule")
        if "closed_at" not in deals.columns:
            raise MappingError("outcome.close_date_is_expected_while_open needs tables.deals.columns.closed_at "
                               "(the 'Close Date' column it reads)")
        if "expected_close_date" in deals.columns:
            raise MappingError("tables.deals: map 'expected_close_date' or declare "
                               "close_date_is_expected_while_open, not both (both fill the expected date)")
    overlap = set(m.stages.order) & (set(m.stages.won) | set(m.stages.lost))
    if overlap:
        raise MappingError(f"stages: {sorted(overlap)} listed both as open stage and as won/lost")


def outcome_join(deals: TableSpec) -> JoinSpec:
    """The join whose rows mean won for an outcome `from: join`: the named one, or the only one."""
    rule = deals.outcome
    names = [j.source for j in deals.join]
    if rule.source is None:
        if len(names) > 1:
            raise MappingError(f"tables.deals.outcome.source: with {len(names)} joins, name the one whose "
                               f"rows mean won (one of {', '.join(names)})")
        return deals.join[0]
    if rule.source not in names:
        raise MappingError(f"tables.deals.outcome.source: '{rule.source}' is not joined into deals"
                           f"{suggest(rule.source, names)}")
    return deals.join[names.index(rule.source)]


def suggest(name: str, options: list[str]) -> str:
    """' (close matches: a, b)' or ' (available: ...)' for an unknown name."""
    close = difflib.get_close_matches(name, [str(o) for o in options], n=3, cutoff=0.5)
    if close:
        return f" (close matches: {', '.join(close)})"
    shown = ", ".join(str(o) for o in options[:12]) + (", ..." if len(options) > 12 else "")
    return f" (available: {shown})"


def snake_case(name: str) -> str:
    """'Total Time Spent on Website' -> 'total_time_spent_on_website'."""
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_") or "column"

"""The YAML mapping that turns a CRM export into the canonical tables: its model,
loading, environment expansion and the checks that need no data.

The format is documented in docs/mapping.md. Every problem becomes one
`MappingError` whose single-line message names the problem and how to fix it.
"""
from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from features.errors import MappingError
from features.schema import ACTIVITY_COLUMNS, DEAL_OPTIONAL, DEAL_REQUIRED, EVENT_COLUMNS

CANONICAL_COLUMNS = {
    "deals": DEAL_REQUIRED + DEAL_OPTIONAL,
    "stage_events": EVENT_COLUMNS,
    "activities": ACTIVITY_COLUMNS,
    "accounts": ["account_id"],
}
DATE_COLUMNS = {"created_at", "closed_at", "entered_at", "expected_close_date", "occurred_at"}
_ENV = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")
_SNAKE = re.compile(r"^[a-z_][a-z0-9_]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SourceSpec(_Strict):
    """Where rows come from: a CSV or Parquet file, or a SQL query."""

    type: Literal["csv", "parquet", "sql"]
    path: str | None = None
    url: str | None = None  # SQLAlchemy URL, e.g. sqlite:///crm.db
    query: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)  # passed to pandas' reader

    @model_validator(mode="after")
    def _complete(self) -> "SourceSpec":
        if self.type == "sql" and not (self.url and self.query):
            raise ValueError("a sql source needs both 'url' and 'query'")
        if self.type != "sql" and not self.path:
            raise ValueError(f"a {self.type} source needs a 'path'")
        return self


class AttributeSpec(_Strict):
    """An extra deal/account column and the kind of feature it is."""

    column: str
    kind: Literal["categorical", "numeric"]


class JoinSpec(_Strict):
    """Left join of a second source onto the table's rows (at most one row per key)."""

    source: str
    key: str  # key column of the table's own source ('on' would be read as YAML's true)
    right_key_: str | None = Field(default=None, alias="right_key")  # the joined source's key, if named differently
    columns: list[str] = Field(default_factory=list)  # the joined columns the mapping may use

    @property
    def right_key(self) -> str:
        return self.right_key_ or self.key


class OutcomeSpec(_Strict):
    """How deals.outcome (and closed_at) are derived.

    column: a source column whose values are listed in `won` / `lost` (others invalid).
    stage:  the deal's stage, or its stage history, reaches a stages.won / stages.lost value.
    join:   a deal with a row in the joined source is won (closed_at from the mapped
            closed_at column); without one it is open, or lost `lost_after_days` after
            creation once that moment lies inside the data.
    """

    from_: Literal["column", "stage", "join"] = Field(alias="from")
    column: str | None = None
    won: list[Any] = Field(default_factory=list)
    lost: list[Any] = Field(default_factory=list)
    lost_after_days: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _complete(self) -> "OutcomeSpec":
        if self.from_ == "column" and not (self.column and self.won):
            raise ValueError("outcome from a column needs 'column' and at least one 'won' value")
        return self


class TableSpec(_Strict):
    """How one canonical table is built from a source."""

    source: str
    join: JoinSpec | None = None
    columns: dict[str, str] = Field(default_factory=dict)  # canonical name -> source column
    date_format: str | None = None  # strftime format for every date column of the table
    date_formats: dict[str, str] = Field(default_factory=dict)  # canonical date column -> format
    dayfirst: bool = False  # only used where no format is given
    null_values: list[str] = Field(default_factory=list)
    attributes: dict[str, AttributeSpec] = Field(default_factory=dict)
    outcome: OutcomeSpec | None = None

    def format_for(self, column: str) -> str | None:
        return self.date_formats.get(column, self.date_format)


class StageSpec(_Strict):
    order: list[str] = Field(min_length=1)  # open stages, first to last
    won: list[str] = Field(default_factory=list)  # source values meaning won (not canonical stages)
    lost: list[str] = Field(default_factory=list)


class Mapping(_Strict):
    """A validated mapping file."""

    name: str = "dataset"
    static: bool = False  # export without dates: one row per lead, attributes only
    sources: dict[str, SourceSpec]
    stages: StageSpec
    null_values: list[str] = Field(default_factory=list)  # placeholders meaning empty, everywhere
    pii: list[str] = Field(default_factory=list)  # source columns never read into any output
    data_end: str | None = None  # censoring time; default: latest timestamp in the data
    tables: dict[Literal["deals", "stage_events", "activities", "accounts"], TableSpec]


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
        if spec.join is not None:
            _check_source_name(m, spec.join.source, f"tables.{table}.join.source")
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
        if not _SNAKE.match(name):
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
        if deals.join is None:
            raise MappingError("outcome from join needs tables.deals.join (the file of closed deals)")
        if not m.static and "closed_at" not in deals.columns:
            raise MappingError("outcome from join needs tables.deals.columns.closed_at "
                               "(the close date column of the joined file)")
    overlap = set(m.stages.order) & (set(m.stages.won) | set(m.stages.lost))
    if overlap:
        raise MappingError(f"stages: {sorted(overlap)} listed both as open stage and as won/lost")


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

"""The YAML mapping's model: sources, tables, joins, recoding, outcome rules (pydantic,
strict: an unknown key is an error). Loading and the checks live in `features.mapping`;
the format is documented in docs/mapping.md."""
from __future__ import annotations

import re
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from features.schema import ACTIVITY_COLUMNS, DEAL_OPTIONAL, DEAL_REQUIRED, EVENT_COLUMNS
from features.validation import Plausible

CANONICAL_COLUMNS = {
    "deals": DEAL_REQUIRED + DEAL_OPTIONAL + ["expected_close_date"],
    "stage_events": EVENT_COLUMNS,
    "activities": ACTIVITY_COLUMNS,
    "accounts": ["account_id"],
}
DATE_COLUMNS = {"created_at", "closed_at", "entered_at", "expected_close_date", "occurred_at"}
SNAKE = re.compile(r"^[a-z_][a-z0-9_]*$")
CASES = ("lower", "upper", "casefold")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RecodeSpec(_Strict):
    """Normalisation of one source column, applied as the source is read (before any join):
    strip whitespace, then change case, then replace whole values by the `values` map."""

    strip: bool = False
    case: str | None = None  # lower | upper | casefold
    values: dict[str, str] = Field(default_factory=dict)

    @field_validator("values", mode="before")
    @classmethod
    def _text_keys(cls, v: Any) -> Any:  # YAML reads `1: one` with an int key
        return {str(k): str(x) for k, x in v.items()} if isinstance(v, dict) else v

    def is_noop(self) -> bool:
        return not (self.strip or self.case or self.values)


class SourceSpec(_Strict):
    """Where rows come from: a CSV or Parquet file, or a SQL query."""

    type: Literal["csv", "parquet", "sql"]
    path: str | None = None
    url: str | None = None  # SQLAlchemy URL, e.g. sqlite:///crm.db
    query: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)  # passed to pandas' reader
    recode: dict[str, RecodeSpec] = Field(default_factory=dict)  # source column -> normalisation
    multiline_values: bool = False  # csv: quoted values may span lines (else a row is one line)

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
    """Left join of a second source onto the table's rows (at most one row per key); a
    table takes a list of them (a star schema: one per dimension file)."""

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
    # open deals older than this many days (from creation) are lost at that age; {stage: days} per current stage
    lost_after_days: int | dict[str, int] | None = None
    source: str | None = None  # from join: the joined source whose rows mean won (default: the only join)
    close_date_is_expected_while_open: bool = False  # closed_at of an open deal is its expected close date

    @field_validator("lost_after_days", mode="before")
    @classmethod
    def _positive_days(cls, v: Any) -> Any:
        values = list(v.values()) if isinstance(v, dict) else [v]
        if v is not None and (not values or not all(type(d) is int and d > 0 for d in values)):
            raise ValueError(f"must be a whole number of days > 0, or {{stage: days}} with such numbers; got {v!r}")
        return v

    @model_validator(mode="after")
    def _complete(self) -> "OutcomeSpec":
        if self.from_ == "column" and not (self.column and self.won):
            raise ValueError("outcome from a column needs 'column' and at least one 'won' value")
        return self


class TableSpec(_Strict):
    """How one canonical table is built from a source."""

    source: str
    join: list[JoinSpec] = Field(default_factory=list)  # one dict or a list of them
    columns: dict[str, str] = Field(default_factory=dict)  # canonical name -> source column
    date_format: str | None = None  # strftime format for every date column of the table
    date_formats: dict[str, str] = Field(default_factory=dict)  # canonical date column -> format
    dayfirst: bool = False  # only used where no format is given
    null_values: list[str] = Field(default_factory=list)
    attributes: dict[str, AttributeSpec] = Field(default_factory=dict)
    outcome: OutcomeSpec | None = None

    @field_validator("join", mode="before")
    @classmethod
    def _join_list(cls, v: Any) -> Any:
        return [] if v is None else [v] if isinstance(v, dict) else v

    def format_for(self, column: str) -> str | None:
        return self.date_formats.get(column, self.date_format)


class StageSpec(_Strict):
    order: list[str] = Field(min_length=1)  # open stages, first to last
    won: list[str] = Field(default_factory=list)  # source values meaning won (not canonical stages)
    lost: list[str] = Field(default_factory=list)


class PlausibleSpec(_Strict):
    """Values outside these bounds are rejects (`date_out_of_range`, `number_out_of_range`),
    never data: a typo dated 9999-12-31 must not become the data end."""

    earliest: str = "1990-01-01"
    latest: str | None = None  # default: today + 5 years (expected close dates lie ahead)
    max_amount: float = Field(default=1e12, gt=0)
    max_number: float = Field(default=1e15, gt=0)  # absolute bound of numeric attributes

    def bounds(self) -> Plausible:
        latest = pd.Timestamp(self.latest) if self.latest else pd.Timestamp.today().normalize() + pd.DateOffset(years=5)
        return Plausible(earliest=pd.Timestamp(self.earliest), latest=latest, max_amount=self.max_amount,
                         max_number=self.max_number)


class Mapping(_Strict):
    """A validated mapping file."""

    name: str = "dataset"
    static: bool = False  # export without dates: one row per lead, attributes only
    sources: dict[str, SourceSpec]
    stages: StageSpec
    null_values: list[str] = Field(default_factory=list)  # placeholders meaning empty, everywhere
    pii: list[str] = Field(default_factory=list)  # source columns never read into any output
    data_end: str | None = None  # censoring time; default: exported_at, else the latest timestamp
    exported_at: str | None = None  # when the export was taken: the date of its current-state facts
    plausible: PlausibleSpec = Field(default_factory=PlausibleSpec)
    tables: dict[Literal["deals", "stage_events", "activities", "accounts"], TableSpec]

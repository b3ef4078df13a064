"""Dates as this project reads them: the day unit, and the one parser of as-of dates.

Every as-of date a user gives (a request's `as_of`, `--as-of`, a cut-off date) goes
through `parse_as_of`: text, a date or a timestamp -> a tz-naive UTC `pd.Timestamp` (the
canonical tables' convention; an offset is converted to UTC, not dropped), or a one-line
`InvalidDate` naming the field. `as_of_timestamps` does the same for a list of dates.
"""
from __future__ import annotations

import pandas as pd

from features.errors import LeadscoreError
from features.schema import TIMESTAMP_DTYPE

DAY = pd.Timedelta(days=1)  # time spans in features, analytics and the forecast are float days


class InvalidDate(LeadscoreError, ValueError):
    """A date the user gave that is not a date (or not a representable one)."""


def utc_now() -> pd.Timestamp:
    """Now, to the second, in UTC and tz-naive like every time in the canonical tables."""
    return pd.Timestamp.now(tz="UTC").tz_localize(None).floor("s")


def parse_as_of(value, name: str = "as_of") -> pd.Timestamp:
    """`value` (text, date, timestamp) -> tz-naive UTC timestamp; InvalidDate otherwise."""
    text = value.strip() if isinstance(value, str) else value
    try:
        ts = pd.Timestamp(text)
    except (ValueError, TypeError, OverflowError):  # OutOfBoundsDatetime is a ValueError
        raise InvalidDate(f"{name}: '{value}' is not a date (use YYYY-MM-DD)") from None
    if ts is pd.NaT:
        raise InvalidDate(f"{name}: no date given (use YYYY-MM-DD)")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    if not 1 <= ts.year <= 9999:  # an offset that crosses year 1 or 9999: no Python datetime holds it
        raise InvalidDate(f"{name}: '{value}' is out of range in UTC")
    return ts


def as_of_timestamps(values, name: str = "as_of") -> pd.DatetimeIndex:
    """A date or a sequence of them -> sorted unique tz-naive UTC `datetime64[us]`."""
    items = list(values) if pd.api.types.is_list_like(values) else [values]
    if not items:
        raise InvalidDate(f"{name}: give at least one date (YYYY-MM-DD)")
    index = pd.DatetimeIndex([parse_as_of(v, name) for v in items])
    try:
        return index.astype(TIMESTAMP_DTYPE).unique().sort_values()
    except (ValueError, OverflowError):
        raise InvalidDate(f"{name}: a date is out of the supported range") from None

"""The one as-of parser: every user-given date goes through it."""
import datetime as dt

import pandas as pd
import pytest

from features.dates import InvalidDate, as_of_timestamps, parse_as_of
from features.errors import LeadscoreError


@pytest.mark.parametrize("value, expected", [
    ("2024-03-01", pd.Timestamp("2024-03-01")),
    ("  2024-03-01 ", pd.Timestamp("2024-03-01")),
    ("2024-03-01T10:00:00Z", pd.Timestamp("2024-03-01T10:00")),
    ("2024-03-01T10:00:00+02:00", pd.Timestamp("2024-03-01T08:00")),  # converted to UTC, not dropped
    (dt.date(2024, 3, 1), pd.Timestamp("2024-03-01")),
    (pd.Timestamp("2024-01-01T05:00", tz="Europe/Paris"), pd.Timestamp("2024-01-01T04:00")),
])
def test_parse_as_of_gives_naive_utc(value, expected):
    got = parse_as_of(value)
    assert got == expected and got.tzinfo is None


@pytest.mark.parametrize("value, words", [
    ("not a date", "is not a date"),
    ("", "no date given"),
    (None, "no date given"),
    (pd.NaT, "no date given"),
    ("99999-01-01", "is not a date"),
    ("0001-01-01T00:00:00+01:00", "out of range"),  # the offset crosses year 1
    ("9999-12-31T23:59:59-01:00", "out of range"),  # ... or year 9999
])
def test_parse_as_of_refuses_in_one_line_naming_the_field(value, words):
    with pytest.raises(InvalidDate, match=words) as caught:
        parse_as_of(value, "--as-of")
    assert str(caught.value).startswith("--as-of: ") and "\n" not in str(caught.value)
    assert isinstance(caught.value, LeadscoreError) and isinstance(caught.value, ValueError)


def test_as_of_timestamps_sorts_dedupes_and_explains_bad_input():
    got = as_of_timestamps(["2024-02-01", "2024-01-01", "2024-02-01"])
    assert list(got) == [pd.Timestamp("2024-01-01"), pd.Timestamp("2024-02-01")]
    assert str(got.dtype) == "datetime64[us]"
    assert list(as_of_timestamps(pd.Timestamp("2024-01-01T05:00", tz="Europe/Paris"))) == \
        [pd.Timestamp("2024-01-01T04:00")]
    with pytest.raises(InvalidDate, match="YYYY-MM-DD"):
        as_of_timestamps(["not a date"])
    with pytest.raises(InvalidDate, match="at least one date"):
        as_of_timestamps([])

"""Plain Python values of a request payload -> numpy arrays, with what does not parse.

Values are converted in C where the payload holds what the request schema lets through
(datetimes, numbers, None), and one by one only when something else is there (text from
the MLflow pyfunc model's frame input, or a bad value).
"""
from __future__ import annotations

import datetime as dt
import re
from itertools import compress, repeat
from operator import is_not
from types import NoneType

import numpy as np
import pandas as pd

from features.schema import TIMESTAMP_DTYPE

UTC = dt.timezone.utc
EPOCH = dt.datetime(1970, 1, 1)
MICROSECOND = dt.timedelta(microseconds=1)
NAT_INT = np.iinfo("int64").min  # NaT as int64
NAT = np.datetime64("NaT", "us")


def checked_times(values: list | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(times, unparseable) of datetimes, ISO 8601 text or None (or times already parsed:
    datetime64): `times`, or `iso_times` for text in the usual form, with anything else
    parsed one by one only when there is some."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "M":
        return values.astype(TIMESTAMP_DTYPE, copy=False), np.zeros(len(values), dtype=bool)
    try:
        return times(values), np.zeros(len(values), dtype=bool)
    except (AttributeError, TypeError, ValueError, OverflowError):
        pass
    if (parsed := iso_times(values)) is not None:
        return parsed, np.zeros(len(values), dtype=bool)
    parsed = [_parse_time(v) for v in values]
    bad = np.array([p is _BAD for p in parsed], dtype=bool)
    return times([None if p is _BAD else p for p in parsed]), bad


_BAD = object()


def _parse_time(value):
    """A datetime (or None) from a payload value; _BAD when it is not one."""
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            value = dt.datetime.fromisoformat(text)
        except ValueError:
            return _BAD
    if not isinstance(value, dt.datetime):
        return _BAD
    if value.tzinfo is not None:
        try:
            value.astimezone(UTC)
        except OverflowError:  # an offset crossing year 1 or 9999: no datetime holds it in UTC
            return _BAD
    return pd.Timestamp(value).to_pydatetime() if isinstance(value, pd.Timestamp) else value


def times(values: list) -> np.ndarray:
    """datetimes (aware ones converted to UTC) or None -> tz-naive datetime64[us]."""
    naive = [v if v is None or v.tzinfo is None else v.astimezone(UTC).replace(tzinfo=None) for v in values]
    if len(naive) > 64:  # pandas converts a long list ~20x faster than numpy, a short one slower
        return pd.DatetimeIndex(naive).as_unit("us").to_numpy(dtype=TIMESTAMP_DTYPE)
    return np.fromiter((NAT_INT if v is None else (v - EPOCH) // MICROSECOND for v in naive), "int64",
                       len(naive)).view(TIMESTAMP_DTYPE)


# the usual form of a time in a payload: 2024-05-01T09:30:00, in UTC when "Z" or "+00:00" follows
ISO_LENGTH = 19
UTC_SUFFIXES = {19: b"", 20: b"Z", 25: b"+00:00"}  # length -> what follows the time
_DIGITS = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
_SEPARATOR_AT = [4, 7, 10, 13, 16]
_SEPARATORS = np.frombuffer(b"--T::", np.uint8)
_MONTH_DAYS = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
_YEARS = (1900, 2199)


def iso_times(values: list) -> np.ndarray | None:
    """Text times (or None) of the usual form `2024-05-01T09:30:00` (naive, or followed by
    "Z" or "+00:00": UTC alike; years 1900-2199) -> datetime64[us], computed from the digits
    for the whole list at once; None when any value is of another form (parse those one by
    one). On this form ISO 8601 parsers agree: `datetime.fromisoformat`, pydantic."""
    if len(values) <= FEW_TIMES:
        return _few_iso_times(values)
    kinds = set(map(type, values))
    if not kinds <= {str, NoneType}:
        return None
    sent = np.fromiter(map(is_not, values, repeat(None)), bool, len(values)) if NoneType in kinds else None
    present = values if sent is None else list(compress(values, sent))
    if not present:
        return np.full(len(values), NAT, dtype=TIMESTAMP_DTYPE)
    lengths = set(map(len, present))
    if not lengths <= UTC_SUFFIXES.keys():
        return None
    parsed = np.empty(len(present), dtype=TIMESTAMP_DTYPE)
    by_length = np.fromiter(map(len, present), "int64", len(present)) if len(lengths) > 1 else None
    for length in lengths:
        rows = slice(None) if by_length is None else np.flatnonzero(by_length == length)
        group = present if by_length is None else [present[i] for i in rows.tolist()]
        try:
            chars = np.frombuffer("".join(group).encode("ascii"), np.uint8).reshape(len(group), length)
        except UnicodeEncodeError:
            return None
        if chars[:, ISO_LENGTH:].tobytes() != UTC_SUFFIXES[length] * len(group):
            return None
        times_of = _iso_digits(chars)
        if times_of is None:
            return None
        parsed[rows] = times_of
    if sent is None:
        return parsed
    out = np.full(len(values), NAT, dtype=TIMESTAMP_DTYPE)
    out[sent] = parsed
    return out


FEW_TIMES = 160  # fewer times are checked one by one: numpy's per-call cost is more than their parse
_ISO_FORM = re.compile(r"(?:19|2[01])[0-9]{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
                       r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:Z|\+00:00)?")


def _few_iso_times(values: list) -> np.ndarray | None:
    """`iso_times` of a few values, one by one (the same form, checked by a pattern)."""
    found = []
    for value in values:
        if value is None:
            found.append(NAT_INT)
            continue
        if type(value) is not str or _ISO_FORM.fullmatch(value) is None:
            return None
        try:
            moment = dt.datetime.fromisoformat(value[:ISO_LENGTH])  # a day that does not exist raises
        except ValueError:
            return None
        found.append((moment - EPOCH) // MICROSECOND)
    return np.array(found, dtype="int64").view(TIMESTAMP_DTYPE)


def _iso_digits(chars: np.ndarray) -> np.ndarray | None:
    """Rows of `YYYY-MM-DDTHH:MM:SS` bytes -> datetime64[us]; None unless every row is a real
    time of that form (Feb 30, hour 24 or a second 60 are not). Small integer types and one
    contiguous row per field: int64 (n, 14) temporaries cost ~4x more for 25,000 times."""
    if not (chars[:, _SEPARATOR_AT] == _SEPARATORS).all():
        return None
    digits = np.ascontiguousarray(chars[:, _DIGITS].T) - np.uint8(ord("0"))  # (14, n); a byte below "0" wraps above 9
    if not (digits <= 9).all():
        return None
    digits = digits.astype("int32")
    pairs = digits[0::2] * 10 + digits[1::2]  # century, year, month, day, hour, minute, second
    year, month, day = pairs[0] * 100 + pairs[1], pairs[2], pairs[3]
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_days = _MONTH_DAYS[np.clip(month, 0, 12)] + (leap & (month == 2))
    if not ((year >= _YEARS[0]) & (year <= _YEARS[1]) & (month >= 1) & (month <= 12) & (day >= 1)
            & (day <= month_days) & (pairs[4] < 24) & (pairs[5] < 60) & (pairs[6] < 60)).all():
        return None
    # days since 1970-01-01 of a proleptic Gregorian date (the civil-days algorithm: eras of 400 years)
    y = year - (month <= 2)
    era, year_of_era = y // 400, y % 400
    day_of_year = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    days = (era * 146097 + year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year - 719468)
    seconds = ((days.astype("int64") * 24 + pairs[4]) * 60 + pairs[5]) * 60 + pairs[6]
    return (seconds * 1_000_000).view(TIMESTAMP_DTYPE)


def strings(values: list) -> np.ndarray:
    """Category values as text, as `astype("string")` writes them."""
    return np.array([v if v is None or isinstance(v, str) else str(v) for v in values], dtype=object)


def child_numbers(values: list) -> tuple[np.ndarray, np.ndarray]:
    """`numbers` of the many child rows of a request, without looking for text first:
    stage history amounts come as numbers (the request schema) or copy the deal's amount,
    checked with the deal."""
    try:
        return np.array(values, dtype="float64"), np.zeros(len(values), dtype=bool)
    except (TypeError, ValueError, OverflowError):
        return numbers(values)


def numbers(values: list) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values, bad) of numbers, numeric text or None/empty; NaN where missing or bad."""
    if str not in set(map(type, values)):  # the usual case: numbers and None
        try:
            return np.array(values, dtype="float64"), np.zeros(len(values), dtype=bool)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond float64
            pass
    out = np.full(len(values), np.nan)
    bad = np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values):
        if v is None:
            continue
        if isinstance(v, (bool, int, float)):
            try:
                out[i] = float(v)
            except OverflowError:  # a 401-digit integer: no float holds it
                bad[i] = True
            continue
        text = str(v).strip()
        if not text:
            continue
        try:
            out[i] = float(text) if "_" not in text else float("x")
        except ValueError:
            bad[i] = True
    return out, bad

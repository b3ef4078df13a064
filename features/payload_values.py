"""Plain Python values of a request payload -> numpy arrays, with what does not parse.

Values are converted in C where the payload holds what the request schema lets through
(datetimes, numbers, None), and one by one only when something else is there (text from
the MLflow pyfunc model's frame input, or a bad value).
"""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from features.schema import TIMESTAMP_DTYPE

UTC = dt.timezone.utc
EPOCH = dt.datetime(1970, 1, 1)
MICROSECOND = dt.timedelta(microseconds=1)
NAT_INT = np.iinfo("int64").min  # NaT as int64


def checked_times(values: list) -> tuple[np.ndarray, np.ndarray]:
    """(times, unparseable) of datetimes, ISO 8601 text or None: `times`, with text and
    anything else parsed one by one only when there is some."""
    try:
        return times(values), np.zeros(len(values), dtype=bool)
    except (AttributeError, TypeError, ValueError, OverflowError):
        pass
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

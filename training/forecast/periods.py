"""Forecast periods: calendar months or quarters from an as-of date."""
from __future__ import annotations

import pandas as pd

from features.dates import parse_as_of
from features.errors import LeadscoreError, NotEnoughData
from features.schema import CanonicalData

FREQS = {"month": "M", "quarter": "Q"}


def make_periods(as_of, n_periods: int, freq: str) -> pd.DataFrame:
    """`n_periods` calendar months/quarters from the one containing `as_of`; the first
    starts at `as_of` (partial unless as_of is the period's first instant)."""
    if freq not in FREQS:
        raise LeadscoreError(f"--freq must be one of {sorted(FREQS)}, not '{freq}'")
    if int(n_periods) < 1:
        raise LeadscoreError(f"--periods must be at least 1 (got {n_periods})")
    as_of = pd.Timestamp(as_of)
    first = as_of.to_period(FREQS[freq])
    labels = [first + k for k in range(int(n_periods))]
    starts = [p.start_time for p in labels]
    ends = [(p + 1).start_time for p in labels]
    partial = [False] * len(labels)
    if as_of > starts[0]:
        starts[0], partial[0] = as_of, True
    return pd.DataFrame({"period": [str(p) for p in labels], "start": pd.DatetimeIndex(starts),
                         "end": pd.DatetimeIndex(ends), "partial": partial})


def period_end(start: pd.Timestamp, freq: str) -> pd.Timestamp:
    """The first instant after the calendar period containing `start`."""
    return (pd.Timestamp(start).to_period(FREQS[freq]) + 1).start_time


def position(start: pd.Timestamp, freq: str) -> int:
    """Month of the quarter (1-3) of a monthly period; 0 for quarters. Won closes pile up
    before quarter ends, and a timing model that misses it errs by month of quarter."""
    return (pd.Timestamp(start).month - 1) % 3 + 1 if freq == "month" else 0


def check_as_of(data: CanonicalData, as_of) -> pd.Timestamp:
    """`as_of` as a timestamp inside the data's dates, or a clear error."""
    as_of = parse_as_of(as_of)
    first, end = data.deals["created_at"].min(), data.data_end
    if data.meta.static:
        raise NotEnoughData("a static lead export has no dates: a revenue forecast needs created/closed dates")
    if pd.isna(first) or as_of < first or as_of > end:
        raise NotEnoughData(f"as-of date {as_of.date()} is outside the data ({first} to {end}): "
                            f"choose a date inside that range")
    return as_of

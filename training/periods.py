"""Forecast periods: calendar months or quarters from an as-of date."""
from __future__ import annotations

import pandas as pd

from features.errors import LeadscoreError

DAY = pd.Timedelta(days=1)
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

"""Cell parsing shared by the validator and the request path: text -> tz-naive UTC
timestamps or floats, with a mask of the non-empty cells that did not parse (empty
cells are missing values, not bad ones)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from features.schema import TIMESTAMP_DTYPE


def parse_timestamps(values: pd.Series, fmt: str | None = None, dayfirst: bool = False
                     ) -> tuple[pd.Series, pd.Series]:
    """Parse to tz-naive UTC timestamps. Returns (parsed, bad) where `bad` marks
    non-empty cells that could not be parsed (empty cells are NaT, not bad)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values
    elif values.isna().all():  # e.g. closed_at of open deals in a payload: nothing to parse
        return pd.Series(pd.NaT, index=values.index, dtype=TIMESTAMP_DTYPE), pd.Series(False, index=values.index)
    else:
        text = values.astype("string").str.strip()
        text = text.mask(text == "")
        if fmt:
            parsed = pd.to_datetime(text, format=fmt, errors="coerce", utc=True)
        else:
            parsed = pd.to_datetime(text, errors="coerce", dayfirst=dayfirst, utc=True,
                                    format="mixed")
        bad = parsed.isna() & text.notna()
        return _naive_utc(parsed), bad.fillna(False).astype(bool)
    return _naive_utc(parsed), pd.Series(False, index=values.index)


def _naive_utc(s: pd.Series) -> pd.Series:
    if getattr(s.dt, "tz", None) is not None:
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    return s.astype(TIMESTAMP_DTYPE)


def parse_numbers(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Parse to float; (parsed, bad) as for timestamps."""
    if pd.api.types.is_numeric_dtype(values):
        return values.astype("float64"), pd.Series(False, index=values.index)
    if values.isna().all():
        return pd.Series(np.nan, index=values.index, dtype="float64"), pd.Series(False, index=values.index)
    text = values.astype("string").str.strip()
    text = text.mask(text == "")
    parsed = pd.to_numeric(text, errors="coerce").astype("float64")
    return parsed, (parsed.isna() & text.notna()).fillna(False).astype(bool)

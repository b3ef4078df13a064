"""The one JSON-safe converter: what every JSON the project writes (metrics files, the
pipeline and forecast JSON, MLflow dicts) passes through, so that strict JSON parsers
read it: numpy scalars -> Python, NaN/inf/NA/NaT -> null, timestamps -> ISO strings,
mappings and sequences recursively, anything else -> its text."""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd


def json_safe(x):
    """A strict-JSON copy of `x` (see the module docstring)."""
    if isinstance(x, Mapping):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer, int)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, pd.Timestamp):
        return None if pd.isna(x) else x.isoformat()
    if x is None or x is pd.NA or x is pd.NaT:
        return None
    return x if isinstance(x, str) else str(x)


def finite_or_none(value) -> float | None:
    """A JSON-safe number: None for NaN/inf/undefined."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None

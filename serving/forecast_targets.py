"""The targets of a `/forecast` request: rows like the lines of a targets file
(`{"period": "2025-01", "target": 500000}`, plus a column named like `group_by` for
per-group targets), checked by the one set of rules (`training.forecast.targets.checked_targets`)
before anything is simulated, each error a 422 at the row and field that caused it
(`targets[2].period`)."""
from __future__ import annotations

import pandas as pd
from starlette.responses import JSONResponse

from features.schema import CanonicalData
from serving.errors import problem
from training.forecast.periods import make_periods
from training.forecast.targets import REQUEST, TargetsError, checked_targets


def request_targets(targets: list | None, data: CanonicalData, at: pd.Timestamp, periods: int, freq: str,
                    group_by: str | None) -> pd.DataFrame | JSONResponse | None:
    """The request's target rows (`serving.schemas.TargetEntry`) as the table `outlook`
    takes, a 422 at the first bad one, or None without targets."""
    if not targets:
        return None
    rows = [t.model_dump() if hasattr(t, "model_dump") else dict(t) for t in targets]
    return targets_error(rows, data, at, periods, freq, group_by) or targets_frame(rows)


def targets_frame(rows: list[dict]) -> pd.DataFrame:
    """The rows as the table a targets file reads as (a key missing from a row is NaN)."""
    return pd.DataFrame.from_records(rows)


def targets_error(rows: list[dict], data: CanonicalData, at: pd.Timestamp, periods: int, freq: str,
                  group_by: str | None) -> JSONResponse | None:
    """A 422 naming the first bad target (`targets[i].field`), or None when they are fine."""
    values = data.deals[group_by] if group_by and group_by in data.deals else None
    try:
        checked_targets(targets_frame(rows), make_periods(at, periods, freq), freq, group_by, values, source=REQUEST)
    except TargetsError as exc:
        field = "targets" if exc.row is None else f"targets[{exc.row}]" + (f".{exc.column}" if exc.column else "")
        return problem(422, f"{field}: {exc}", [{"field": field, "message": str(exc)}])
    return None

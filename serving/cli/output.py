"""Writing a command's result by the suffix of --out: a frame to .csv/.parquet/.json, a
dict to .json, a rendered page (str) to .html; the checks of the options that shape it
(`--out` suffix, `--currency`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from features.errors import LeadscoreError

FRAME_SUFFIXES = (".csv", ".json", ".parquet")
CURRENCY_ENV = "LEADSCORE_CURRENCY"  # the default of --currency (the HTML reports' amounts)


def check_suffix(out: Path, allowed: Sequence[str]) -> str:
    """The lower-case suffix of `out`; a one-line error when it is not one of `allowed`
    (checked before any work is done)."""
    suffix = Path(out).suffix.lower()
    if suffix not in allowed:
        raise LeadscoreError(f"--out: cannot write '{out}': the file suffix must be one of {', '.join(allowed)}")
    return suffix


def checked_currency(currency: str | None) -> str | None:
    """An ISO-like currency code (3 letters), upper-cased; a one-line error otherwise."""
    if currency is None or not currency.strip():
        return None
    code = currency.strip().upper()
    if not (len(code) == 3 and code.isalpha() and code.isascii()):
        raise LeadscoreError(f"--currency: '{currency}' is not a currency code; give three letters such as USD, EUR, "
                             f"GBP or CHF (or set {CURRENCY_ENV})")
    return code


def write_output(value: pd.DataFrame | Mapping | str, out: Path) -> None:
    """Write `value` to `out` (its folder created): a frame by the suffix, a dict as
    indented JSON, a string as it is."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(value, pd.DataFrame):
        write_frame(value, out)
    elif isinstance(value, str):
        out.write_text(value)
    else:
        out.write_text(json.dumps(value, indent=2, default=str))


def write_frame(frame: pd.DataFrame, out: Path) -> None:
    """.json: records with ISO dates; .csv / .parquet: one row per row, nested values
    (lists, dicts such as `top_factors`) as JSON strings."""
    suffix = check_suffix(out, FRAME_SUFFIXES)
    if suffix == ".json":
        out.write_text(frame.to_json(orient="records", date_format="iso", indent=1))
        return
    flat = frame.assign(**{c: [json.dumps(v) for v in frame[c]] for c in _nested_columns(frame)})
    if suffix == ".csv":
        flat.to_csv(out, index=False)
    else:
        flat.to_parquet(out, index=False)


def _nested_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns
            if frame[c].dtype == object and frame[c].map(lambda v: isinstance(v, (list, dict))).any()]

"""Date-times in answers: UTC, and saying so with "Z".

Every time inside the project is UTC without an offset (`features.dates`); a client must
not have to know that. `/score` writes its times as UTC-aware datetimes (`UtcTime` in the
response models, `as_utc` on the fast path); `/forecast`, `/pipeline`, `/monitor` and
`/status` answer with the JSON their builders made (`features.jsonsafe`), whose date-times
are ISO strings without an offset: `mark_utc` ends each of them in "Z". Dates without a
time (`2025-01-31`) stay dates.
"""
from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

from pydantic import AfterValidator

UTC = dt.timezone.utc
_NAIVE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?")


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """`value` as a UTC-aware datetime (a naive one is UTC already)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcTime = Annotated[dt.datetime, AfterValidator(as_utc)]  # a response's date-time: written with "Z"


def mark_utc(answer: Any) -> Any:
    """A JSON-ready answer with every offset-less ISO date-time string ending in "Z"."""
    if isinstance(answer, dict):
        return {k: mark_utc(v) for k, v in answer.items()}
    if isinstance(answer, list):
        return [mark_utc(v) for v in answer]
    if isinstance(answer, str) and _NAIVE_TIME.fullmatch(answer):
        return answer + "Z"
    return answer

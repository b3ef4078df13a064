"""The request path: payload deals -> checked arrays -> scores, the same for the HTTP
service and the MLflow pyfunc model.

    check_request:      validation (`features.payload.checked_payload`, every check the
                        scoring code relies on) -> rejects as request field paths ->
                        facts dated after as-of
    CompiledPredictor.score_arrays:  scoring
    category_warnings:  values the model never saw in training (scored as unknown)

`score_request` chains the three; the service (`serving/request.py`) chains the same steps
around its batcher (scoring concurrent requests together needs an `await` between the
check and the warnings) and adds only the HTTP shape: status codes and the JSON body.

It lives in `training`, not `serving`: the pyfunc model is logged from `training` and
imports nothing above it (features <- training <- serving), and it must not take a
second path. Not in `features` either: scoring needs the trained predictor.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.arrays import DealArrays
from features.payload import PayloadColumns, PayloadReject, checked_payload, payload_columns
from features.schema import Reason
from training.compiled import CompiledPredictor, Explain, Scores, rows_at
from training.predictor import default_as_of

REASON_MESSAGES = {
    Reason.DUPLICATE_ID: "deal_id repeats an earlier deal",
    Reason.MISSING_REQUIRED: "is required",
    Reason.UNPARSEABLE_DATE: "is not a date (use ISO 8601, e.g. 2024-05-01T09:30:00Z)",
    Reason.UNPARSEABLE_NUMBER: "is not a number",
    Reason.NEGATIVE_AMOUNT: "must be >= 0",
    Reason.UNKNOWN_STAGE: "is not one of the model's stages",
    Reason.EVENT_BEFORE_CREATE: "is before the deal's created_at",
    Reason.EVENT_AFTER_CLOSE: "is after the deal closed",
    Reason.UNKNOWN_DEAL: "belongs to no deal in the request",
}


@dataclass(frozen=True)
class FieldError:
    field: str  # where in the request, e.g. deals[3].amount
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


@dataclass
class CheckedRequest:
    """A request's deals as arrays with one as-of time per deal (NaT for a static model),
    and what is wrong with them: scored only when `errors` is empty."""

    arrays: DealArrays
    as_of: pd.Timestamp | None  # None for a static model
    at: np.ndarray
    errors: list[FieldError]

    def summary(self) -> str:
        first = self.errors[0]
        return f"{len(self.errors)} invalid field(s); first: {first.field}: {first.message}"


@dataclass
class ScoredRequest:
    checked: CheckedRequest
    scores: Scores | None  # None when the request has errors
    warnings: dict[int, list[str]]  # deal position -> unknown-category warnings


def score_request(model: CompiledPredictor, deals: list[dict], as_of=None, explain: Explain = False) -> ScoredRequest:
    """The whole path for one request, scored at once (the pyfunc model)."""
    checked = check_request(model, deals, as_of)
    if checked.errors:
        return ScoredRequest(checked, None, {})
    return ScoredRequest(checked, model.score_arrays(checked.arrays, checked.at, explain),
                         category_warnings(model, checked.arrays))


def check_request(model: CompiledPredictor, deals: list[dict] | PayloadColumns, as_of=None) -> CheckedRequest:
    """Payload deals (dicts, or columns parsed from the body: `serving.columnar`) -> arrays
    and the request's field errors (rejects, then facts after as-of)."""
    at = None if model.static else default_as_of(as_of)
    columns = deals if isinstance(deals, PayloadColumns) else payload_columns(deals, model.meta)
    checked = checked_payload(columns, model.meta)
    errors = reject_errors(checked.rejects)
    if not errors and at is not None:
        errors = future_errors(checked.facts, at)
    return CheckedRequest(arrays=checked.arrays, as_of=at, at=rows_at(at, len(deals)), errors=errors)


def reject_errors(rejects: list[PayloadReject]) -> list[FieldError]:
    """The validator's rejects at their request paths; a deal rejected for its own fields
    takes its stage history and activities along silently."""
    return [FieldError(rej.path, f"{REASON_MESSAGES.get(rej.reason, rej.reason.replace('_', ' '))} ({rej.detail})")
            for rej in rejects if rej.reason != Reason.DEAL_REJECTED]


def future_errors(facts: dict[str, tuple[np.ndarray, np.ndarray]], as_of: pd.Timestamp) -> list[FieldError]:
    """Facts dated after `as_of` cannot be known at `as_of`: the request is inconsistent.
    `facts`: request field -> (deal position, time) of each dated fact (`CheckedPayload.facts`)."""
    out = []
    limit = np.datetime64(as_of)
    for name, (deal, times) in facts.items():
        late = times > limit
        if not late.any():  # the usual case
            continue
        first: dict[int, np.datetime64] = {}
        for i, t in zip(deal[late].tolist(), times[late]):
            first[i] = min(first.get(i, t), t)
        for i, t in first.items():
            out.append(FieldError(f"deals[{i}].{name}", f"{_utc_text(t)} is after as_of {_utc_text(as_of)}: send "
                                                        f"as_of at or after the deal's latest fact"))
    return out


def _utc_text(t) -> str:
    """A time in an error message as the answers write times: UTC, ending in "Z"."""
    t = pd.Timestamp(t)
    return (t.tz_convert("UTC").tz_localize(None) if t.tzinfo is not None else t).isoformat() + "Z"


def category_warnings(model: CompiledPredictor, arrays: DealArrays) -> dict[int, list[str]]:
    """{deal position: ["owner 'x' was not seen in training; scored as unknown", ...]}."""
    names = model.builder.attribute_features_
    warnings: dict[int, list[str]] = {}
    for col, values in arrays.fields.items():
        levels = model.lookups.categories.get(names.get(col, col))
        if levels is None or col == "stage" or values.dtype != object:
            continue
        codes = levels.encode(values, len(values))
        for pos in np.flatnonzero((codes < 0) & (values != None)):  # noqa: E711  (elementwise)
            warnings.setdefault(int(pos), []).append(f"{col} '{values[pos]}' was not seen in training; "
                                                     f"scored as unknown")
    return warnings

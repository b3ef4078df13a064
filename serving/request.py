"""`/score`: the request path of `training.request` plus the HTTP shape.

The checks, the scoring and the warnings are `training.request`'s (the MLflow pyfunc model
runs the same steps); here the deals are scored through the batcher (concurrent requests
together), field errors become a 422, and the scores become the `ScoreResponse` JSON.
"""
from __future__ import annotations

import logging
from itertools import repeat
from typing import Callable

import anyio.to_thread
import numpy as np
import pandas as pd
from starlette.background import BackgroundTask
from starlette.responses import JSONResponse, Response

from features.payload import PayloadColumns
from serving.batching import LARGE_REQUEST_ROWS, ScoreBatcher, request_rows
from serving.errors import problem
from serving.schemas import DEAL_FIELDS, SCORED_DEFAULTS, score_response_json
from serving.times import as_utc
from serving.unknown_fields import unknown_deal_keys, unknown_key_errors, unknown_key_warnings
from training.compiled import CompiledPredictor, Explain, Scores
from training.request import category_warnings, check_request

log = logging.getLogger("leadscore.serving")
SCORE_COLUMNS = ["deal_id", "as_of", "close_probability", "score", "tier", "p_close_within_30d",
                 "p_close_within_60d", "p_close_within_90d", "expected_close_date_p10", "expected_close_date_p50",
                 "expected_close_date_p90", "close_days_p10", "close_days_p50", "close_days_p90", "top_factors",
                 "stale", "stale_reason"]


async def score_request(model: CompiledPredictor, batcher: ScoreBatcher, deals: list[dict] | PayloadColumns, as_of,
                        explain: Explain,
                        version: int, strict_keys: bool = False,
                        record: Callable[[Scores], list | None] = lambda _scored: None) -> Response | JSONResponse:
    """Schema-checked deals (`serving.schemas.ScoreRequest`'s dicts, or the columns of a clean
    body: `serving.columnar`) -> the `/score` response. A deal key that is neither a deal
    field nor a model attribute is a warning on that deal, or, with `strict_keys`, a 422
    naming each with its close match (a clean body has none). `record(scored)` gets the
    scores (the service queues them for the score log) and returns each scored row's trend,
    or None."""
    known = DEAL_FIELDS | set(model.meta.attributes)
    columnar = isinstance(deals, PayloadColumns)
    unknown = {} if columnar else unknown_deal_keys(deals, known)
    if unknown and strict_keys:
        errors = unknown_key_errors(unknown, known)
        return problem(422, f"{len(errors)} unknown deal field(s) (LEADSCORE_STRICT_KEYS=1); first: "
                            f"{errors[0]['field']}: {errors[0]['message']}", errors)
    if request_rows(deals) > LARGE_REQUEST_ROWS:  # a big request is checked off the event loop
        checked = await anyio.to_thread.run_sync(check_request, model, deals, as_of)
    else:
        checked = check_request(model, deals, as_of)
    if checked.errors:
        return problem(422, checked.summary(), [e.as_dict() for e in checked.errors])
    scored = await batcher.score(checked.arrays, checked.at, explain)  # with concurrent requests, if any
    trends = record(scored)
    warnings = category_warnings(model, checked.arrays)
    for pos, said in unknown_key_warnings(unknown, known).items():
        warnings.setdefault(pos, []).extend(said)
    ids = scored["deal_id"]
    # logged once the response is sent (a background task): the client does not wait for the log.
    # An async task runs on the loop; a plain function would be handed to a worker thread and back
    # (starlette's threadpool), ~1 ms of the loop's time per request under load for one log line
    logged = BackgroundTask(_log_scored, len(ids), ",".join(map(str, ids[:5])), ",..." if len(ids) > 5 else "")
    # written as the ScoreResponse JSON directly: validating our own output per deal cost more than scoring
    sent_ids = deals.deals["deal_id"] if columnar else [deal["deal_id"] for deal in deals]
    body = score_response_json(version, checked.as_of, shape_scores(scored, sent_ids, warnings, version, trends))
    return Response(body, media_type="application/json", background=logged)


async def _log_scored(n: int, first_ids: str, more: str) -> None:
    log.info("scored %d deals (ids %s%s)", n, first_ids, more)


def shape_scores(scored: Scores | pd.DataFrame, deal_ids: list, warnings: dict[int, list[str]],
                 version: int, trends: list | None = None) -> list[dict]:
    """Scored rows (a frame or {column: values}) in the order of `deal_ids` (the request's),
    NaN/NaT as null, plus model version and warnings. Built from plain column lists: pandas'
    object conversions cost more than the scoring of a deal."""
    columns = {c: _plain_values(scored[c], day=c.startswith("expected_close_date_")) for c in SCORE_COLUMNS if c in scored}
    scored_ids = columns["deal_id"]
    if scored_ids == list(deal_ids):  # the usual case: scored in request order
        found: list[int | None] = list(range(len(scored_ids)))
        columns["deal_id"] = scored_ids
    else:
        position = {deal_id: i for i, deal_id in enumerate(scored_ids)}
        found = [position.get(deal_id) for deal_id in deal_ids]
        columns = {c: [None if k is None else values[k] for k in found] for c, values in columns.items()}
        columns["deal_id"] = list(deal_ids)
    columns["model_version"] = repeat(version)
    columns["warnings"] = [warnings.get(i, []) for i in range(len(found))]
    columns["trend"] = repeat(None) if trends is None else [
        None if k is None or trends[k] is None else {**trends[k], "since": as_utc(trends[k]["since"])} for k in found]
    # the response's fields in its order (`serving.schemas.SCORED_FIELDS`): written as they are
    return [dict(zip(SCORED_DEFAULTS, values))
            for values in zip(*(columns.get(name, repeat(default)) for name, default in SCORED_DEFAULTS.items()))]


def _plain_values(column, day: bool = False) -> list:
    """A column as Python values with None for missing (datetimes as UTC datetime.datetime,
    or datetime.date with `day`)."""
    if isinstance(column, list):
        return column
    values = np.asarray(column)
    if values.dtype.kind == "M":
        if day:
            return values.astype("datetime64[D]").tolist()  # NaT -> None
        return list(map(as_utc, values.astype("datetime64[us]").tolist()))
    if values.dtype.kind == "f":
        return [None if v != v else v for v in values.tolist()]
    if values.dtype.kind in "iub":
        return values.tolist()
    return [None if v is None or v is pd.NA or (isinstance(v, float) and v != v) else v for v in values.tolist()]

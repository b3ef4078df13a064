"""What `leadscore score` calls: a registered predictor scores every deal open at an as-of date."""
from __future__ import annotations

import pandas as pd

from features.schema import CanonicalData
from training.registry import load_predictor


def score(data: CanonicalData, as_of=None, explain: bool = True, model_name: str = "leadscore",
          version: int | None = None) -> pd.DataFrame:
    """Deals open at `as_of` (default: the data end) scored by `version` (default: the
    champion), one row per deal with the `model_version` that scored it."""
    predictor, version = load_predictor(model_name, version)
    as_of = None if predictor.static else (pd.Timestamp(as_of) if as_of else data.data_end)
    return predictor.score(data, as_of, explain=explain).assign(model_version=version)


def trend_and_log(scored: pd.DataFrame, model_name: str, version: int) -> tuple[pd.DataFrame, str]:
    """`score`'s frame with a `trend` column (`training.monitoring.trend`, from the deals'
    logged scores), and those rows recorded in the score log; with a one-line summary that
    names a store outage instead of raising it (the scores stand, without trends)."""
    import sqlalchemy as sa

    from training.monitoring.trend import log_trends
    from training.store.connection import StoreUnavailable, open_store
    from training.store.score_log import score_rows
    from training.store.scores import record_scores, scores

    try:
        store = open_store()
    except StoreUnavailable as exc:
        return scored.assign(trend=None), f"scores not logged: {exc}"
    try:
        try:
            trend = log_trends(scored, scores(store, deal_ids=scored["deal_id"]))
        except sa.exc.SQLAlchemyError:
            trend = [None] * len(scored)
        written = record_scores(store, score_rows(scored, model_name, version))
    finally:
        store.close()
    summary = f"{written:,} scores logged" if written or scored.empty else \
        "scores not logged: the store refused the write"
    return scored.assign(trend=trend), summary

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


def log_scores(scored: pd.DataFrame, model_name: str, version: int) -> str:
    """Record `score`'s rows in the score log (`training.store`); a one-line summary, which
    names a store outage instead of raising it (the scores were still computed)."""
    from training.store.connection import StoreUnavailable, open_store
    from training.store.score_log import score_rows
    from training.store.scores import record_scores

    try:
        store = open_store()
    except StoreUnavailable as exc:
        return f"scores not logged: {exc}"
    try:
        written = record_scores(store, score_rows(scored, model_name, version))
    finally:
        store.close()
    return f"{written:,} scores logged" if written or scored.empty else "scores not logged: the store refused the write"

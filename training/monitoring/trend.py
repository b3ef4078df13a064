"""Score trend per deal: improving / steady / declining, from its recent logged scores.

The rule: the reference is the deal's earliest logged score with an as-of in the
`TREND_DAYS` days before the current score's (strictly before it); the change is the
current close probability minus the reference's; `improving` when it is >= +`TREND_DELTA`,
`declining` when <= -`TREND_DELTA`, else `steady`; no earlier score in the window: no trend
(null). The factor that moved most: the log keeps factor names only (no values), so it is
the first of the current top factors on the side of the move (positive factors for
improving, negative for declining) that was not among the reference's top factors, else
the strongest on that side; none when steady.

`trends` is the one implementation; `TrendIndex` (the service: recent scores per deal in
memory, fed by /score, seeded from the log at start) and `log_trends` (`leadscore score`:
one indexed query per 500 deals) only find the references.
"""
from __future__ import annotations

import threading
from collections import defaultdict, deque
from datetime import datetime, timedelta
from typing import Any, Sequence

import numpy as np
import pandas as pd

from training.store.score_log import factor_names

TREND_DAYS = 30
TREND_DELTA = 0.05
KEPT_PER_DEAL = 8  # the index keeps this many recent scores per deal


def trends(p_now: np.ndarray, factors_now: Sequence[Any], p_ref: np.ndarray, ref_as_of: Sequence[Any],
           ref_factors: Sequence[Sequence[str] | None]) -> list[dict | None]:
    """One trend per deal (None where p_ref is NaN: no earlier score in the window);
    factors_now: the current `top_factors` dicts; ref_factors: the reference's factor names."""
    p_now, p_ref = np.asarray(p_now, dtype=float), np.asarray(p_ref, dtype=float)
    change = p_now - p_ref
    direction = np.where(change >= TREND_DELTA, "improving", np.where(change <= -TREND_DELTA, "declining", "steady"))
    side_of = {"improving": "positive", "declining": "negative", "steady": None}
    out: list[dict | None] = []
    for k, (delta, way) in enumerate(zip(change.tolist(), direction.tolist())):  # plain floats: ~1 us a deal
        if delta != delta:  # NaN: no earlier score
            out.append(None)
            continue
        side = side_of[way]
        names = [f["feature"] for f in (factors_now[k] or {}).get(side, ())] if side else []
        before = ref_factors[k] or ()
        moved = next((n for n in names if n not in before), names[0] if names else None)
        since = ref_as_of[k]
        out.append({"direction": way, "change": round(delta, 4),
                    "since": since if type(since) is datetime else pd.Timestamp(since).to_pydatetime(),
                    "factor": moved})
    return out


class TrendIndex:
    """The service's recent scores per deal: `observe` gives each scored deal its trend and
    then remembers the score (thread-safe; bounded per deal)."""

    def __init__(self) -> None:
        self._recent: dict[str, deque] = defaultdict(lambda: deque(maxlen=KEPT_PER_DEAL))
        self._lock = threading.Lock()

    def seed(self, logged: pd.DataFrame) -> None:
        """Remember logged scores (`scores.scores` rows, oldest first)."""
        with self._lock:
            for deal, at, p, names in zip(logged["deal_id"], logged["as_of"].dt.to_pydatetime(),
                                          logged["probability"], logged["top_factors"]):
                self._recent[deal].append((at, float(p), list(names)))

    def observe(self, scored) -> list[dict | None]:
        """Trends of scored output columns (deal_id, as_of, close_probability, top_factors)."""
        ids = list(scored["deal_id"])
        times = np.asarray(scored["as_of"])
        at = times.astype("datetime64[us]").tolist() if times.dtype.kind == "M" and not np.isnat(times).any() \
            else pd.to_datetime(times).to_pydatetime()  # datetimes alike; pandas' conversion is ~0.5 ms a call
        factors = scored.get("top_factors") or [None] * len(ids)
        p_ref, ref_at, ref_names = np.full(len(ids), np.nan), [None] * len(ids), [None] * len(ids)
        window = timedelta(days=TREND_DAYS)
        with self._lock:
            for k, deal in enumerate(ids):
                kept = self._recent.get(deal)
                if not kept:  # a deal scored for the first time
                    continue
                now = at[k]
                start = now - window  # once per deal, not per remembered score
                earlier = [s for s in kept if start <= s[0] < now]
                if earlier:
                    ref = min(earlier, key=lambda s: s[0])
                    p_ref[k], ref_at[k], ref_names[k] = ref[1], ref[0], ref[2]
            found = trends(scored["close_probability"], factors, p_ref, ref_at, ref_names)
            for deal, when, p, f in zip(ids, at, np.asarray(scored["close_probability"], dtype=float).tolist(), factors):
                self._recent[deal].append((when, p, factor_names(f)))
        return found


def log_trends(frame: pd.DataFrame, logged: pd.DataFrame) -> list[dict | None]:
    """Trends of a scored frame (`training.scoring.score`) from the logged scores of its deals
    (`since` as an ISO string: score files are JSON, CSV or Parquet)."""
    if logged.empty:
        return [None] * len(frame)
    now = frame[["deal_id", "as_of"]].reset_index(drop=True)
    pairs = now.merge(logged[["deal_id", "as_of", "probability", "top_factors"]], on="deal_id", how="left",
                      suffixes=("", "_ref"))
    inside = (pairs["as_of_ref"] < pairs["as_of"]) & (pairs["as_of_ref"] >= pairs["as_of"] - pd.Timedelta(days=TREND_DAYS))
    refs = pairs[inside].sort_values("as_of_ref", kind="stable").drop_duplicates("deal_id")
    ref = now[["deal_id"]].merge(refs, on="deal_id", how="left")
    factors = frame["top_factors"].tolist() if "top_factors" in frame else [None] * len(frame)
    found = trends(frame["close_probability"].to_numpy(), factors, ref["probability"].to_numpy(dtype=float),
                   ref["as_of_ref"].tolist(), ref["top_factors"].tolist())
    return [t if t is None else {**t, "since": t["since"].isoformat()} for t in found]  # files hold JSON




def seeded_trend_index(url: str | None = None) -> TrendIndex:
    """A `TrendIndex` holding the scores logged in the last `TREND_DAYS` days (by log time);
    empty, with one warning line, when the store cannot be read."""
    import logging

    import sqlalchemy as sa

    from training.store.connection import StoreUnavailable, open_store
    from training.store.schema import utc_now
    from training.store.scores import scores

    index = TrendIndex()
    try:
        store = open_store(url)
        try:
            index.seed(scores(store, since=utc_now() - timedelta(days=TREND_DAYS)))
        finally:
            store.close()
    except (StoreUnavailable, sa.exc.SQLAlchemyError, OSError) as exc:
        logging.getLogger(__name__).warning("score trends start empty: the score log cannot be read (%s)",
                                            type(exc).__name__)
    return index

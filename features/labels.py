"""Labels: what happened after each as-of date. A deal still open at data_end is
censored (won = NaN, never 0); survival targets carry (duration_days, event_observed)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from features.schema import TIMESTAMP_DTYPE, CanonicalData

LABEL_COLUMNS = ["won", "days_to_close", "closed_within_data", "event_observed", "duration_days"]


def make_labels(data: CanonicalData, snapshots: pd.DataFrame, horizons: Sequence[int] = (30, 60, 90)
                ) -> pd.DataFrame:
    """Labels aligned row by row with `snapshots` (deal_id, as_of).

    won: 1/0 if the deal closed by data_end, else NaN. days_to_close: closed_at - T.
    won_within_{h}d: 1/0, NaN when the deal is still open at data_end and fewer than h
    days were observed after T. duration_days/event_observed: time to close (or to
    data_end when open) and whether that close was a win.
    """
    end = np.datetime64(pd.Timestamp(data.data_end).as_unit("us"))
    deals = data.deals.set_index(data.deals["deal_id"].astype("string"))
    row = deals.index.get_indexer(snapshots["deal_id"].astype("string"))
    if (row < 0).any():
        raise ValueError(f"{int((row < 0).sum())} snapshot rows name deals that are not in data.deals: "
                         f"build the snapshots from the same data")
    closed_at = deals["closed_at"].to_numpy(dtype=TIMESTAMP_DTYPE)[row]
    outcome = deals["outcome"].astype("string").to_numpy(dtype=object, na_value=None)[row]
    at = snapshots["as_of"].to_numpy(dtype=TIMESTAMP_DTYPE)
    closed = ~np.isnat(closed_at) & (closed_at <= end) & np.isin(outcome, ["won", "lost"])
    won = np.where(closed, (outcome == "won").astype("float64"), np.nan)
    days_to_close = np.where(closed, (closed_at - at) / np.timedelta64(1, "D"), np.nan)
    observed_days = np.maximum((end - at) / np.timedelta64(1, "D"), 0.0)  # T after data_end: nothing seen
    out = pd.DataFrame({"deal_id": snapshots["deal_id"].to_numpy(), "as_of": at, "won": won,
                        "days_to_close": days_to_close, "closed_within_data": closed})
    for h in horizons:
        within = np.where(closed, ((won == 1.0) & (days_to_close <= h)).astype("float64"), 0.0)
        out[f"won_within_{h}d"] = np.where(closed | (observed_days >= h), within, np.nan)
    out["event_observed"] = won == 1.0
    out["duration_days"] = np.where(closed, days_to_close, observed_days)
    return out


def static_labels(data: CanonicalData, features: pd.DataFrame) -> pd.DataFrame:
    """Static mode: won from the outcome column only (1/0, NaN when unknown)."""
    outcome = data.deals.set_index(data.deals["deal_id"].astype("string"))["outcome"].astype("string")
    outcome = outcome.reindex(features["deal_id"].astype("string")).to_numpy(dtype=object, na_value=None)
    won = np.where(np.isin(outcome, ["won", "lost"]), (outcome == "won").astype("float64"), np.nan)
    return pd.DataFrame({"deal_id": features["deal_id"].to_numpy(), "as_of": features["as_of"].to_numpy(),
                         "won": won, "closed_within_data": ~np.isnan(won)})

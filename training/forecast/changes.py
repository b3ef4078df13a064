"""What changed since the previous forecast: the previous stored forecast of the same
period and grouping (`training.store.forecasts`), and the deal movements between its
as-of date and now, read from the canonical tables at both dates with the snapshot
engine (`features.snapshots.deals_at`).

Movements (each with a count and a value; value = the deal's amount, unknown amounts
count as 0 and are counted in `without_amount`):
- new: created after the previous as-of, up to now (value: its amount now, or at close);
- won / lost: closed after the previous as-of, up to now (value: its amount at close);
- pushed: open at both dates, expected close inside the period then, after it now;
- pulled in: open at both dates, expected close after the period then, inside it now;
- amount up / down: open at both dates, amount changed (value: the sum of the changes).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from features.schema import CanonicalData
from features.snapshots import deals_at
from training.store.connection import Store
from training.store.forecasts import forecasts as stored_forecasts
from training.store.schema import naive_utc

MOVES = ("new", "won", "lost", "pushed", "pulled_in", "amount_up", "amount_down")


def previous_forecast(store: Store, as_of: pd.Timestamp, freq: str, group_column: str,
                      period_start: pd.Timestamp) -> pd.DataFrame:
    """The rows (one per group) of the latest forecast stored for the period starting at
    `period_start` (calendar start) with an as-of date before `as_of`; empty when none."""
    rows = stored_forecasts(store, freq=freq, group_column=group_column)
    rows = rows.loc[(rows["period_start"] == naive_utc(period_start)) & (rows["as_of"] < naive_utc(as_of))]
    if rows.empty:
        return rows
    latest = rows.loc[rows["as_of"] == rows["as_of"].max()]
    return latest.loc[latest["created_at"] == latest["created_at"].max()].reset_index(drop=True)


def deal_changes(data: CanonicalData, since: pd.Timestamp, until: pd.Timestamp, period_start: pd.Timestamp,
                 period_end: pd.Timestamp) -> dict:
    """The deal movements between `since` and `until` (see the module doc), as
    {move: {"count", "value"}} plus `without_amount` (deals moved without a known amount)."""
    before = deals_at(data, since).set_index("deal_id")
    now = deals_at(data, until).set_index("deal_id")
    deals = data.deals.set_index("deal_id")
    created = deals["created_at"]
    closed = deals["closed_at"]
    final = deals["amount"].astype("float64")
    new = created.index[(created > since) & (created <= until)]
    closed_in = (closed > since) & (closed <= until)
    won = closed.index[closed_in & (deals["outcome"] == "won")]
    lost = closed.index[closed_in & (deals["outcome"] == "lost")]
    both = before.index.intersection(now.index)
    b, n = before.loc[both], now.loc[both]
    was_in = (b["expected_close_date"] >= period_start) & (b["expected_close_date"] < period_end)
    is_in = (n["expected_close_date"] >= period_start) & (n["expected_close_date"] < period_end)
    pushed = both[(was_in & (n["expected_close_date"] >= period_end)).to_numpy()]
    pulled = both[((b["expected_close_date"] >= period_end) & is_in).to_numpy()]
    delta = (n["amount"] - b["amount"]).astype("float64")
    value_new = now["amount"].reindex(new).fillna(final.reindex(new))
    moves = {"new": value_new, "won": final.reindex(won), "lost": final.reindex(lost),
             "pushed": n["amount"].reindex(pushed), "pulled_in": n["amount"].reindex(pulled),
             "amount_up": delta[delta > 0], "amount_down": -delta[delta < 0]}
    out = {name: {"count": int(len(v)), "value": float(np.nansum(v.to_numpy(dtype="float64")))}
           for name, v in moves.items()}
    out["without_amount"] = int(sum(int(v.isna().sum()) for k, v in moves.items() if not k.startswith("amount")))
    return out

"""The point-in-time state every pipeline metric is computed from.

`build_state(data, as_of)` keeps only what was known at `as_of` (deals created by then,
closes, stage events and activities dated <= as_of; a deal closed later is open) and
turns the stage history into *spells*: one row per stay of a deal in a stage. Every
metric, including the ones at earlier dates (velocity trend, waterfall start), is then
a filter on this state, so nothing after `as_of` can leak in.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from features.schema import CanonicalData

DAY = pd.Timedelta(days=1)
SPELL_EXITS = ("advanced", "regressed", "won", "lost", "open")


@dataclass
class PipelineState:
    """What was known at `as_of`: deals (closes after as_of blanked), spells, events, activities."""

    as_of: pd.Timestamp
    stages: list[str]
    deals: pd.DataFrame  # deal_id, created_at, closed_at, outcome, amount, grouping columns
    spells: pd.DataFrame  # deal_id, stage, stage_idx, start, end (NaT while open), exit
    events: pd.DataFrame | None  # every event row <= as_of, field updates included
    activities: pd.DataFrame | None

    def subset(self, deal_mask: pd.Series) -> "PipelineState":
        """The same state restricted to some deals (one group of a group-by)."""
        ids = self.deals.loc[deal_mask, "deal_id"]
        keep = lambda t: None if t is None else t.loc[t["deal_id"].isin(ids)]  # noqa: E731
        return replace(self, deals=self.deals.loc[deal_mask], spells=keep(self.spells),
                       events=keep(self.events), activities=keep(self.activities))

    def open_mask(self, t: pd.Timestamp) -> pd.Series:
        """Deals open at time t (t <= as_of)."""
        d = self.deals
        return (d["created_at"] <= t) & (d["closed_at"].isna() | (d["closed_at"] > t))

    def spells_at(self, t: pd.Timestamp) -> pd.DataFrame:
        """The spell each deal open at t was in at t (at most one per deal)."""
        s = self.spells
        return s.loc[(s["start"] <= t) & (s["end"].isna() | (s["end"] > t))]


def build_state(data: CanonicalData, as_of: pd.Timestamp) -> PipelineState:
    """Clip the canonical tables to `as_of` and derive stage spells.

    Inside the state `deal_id` is a dense integer key (joins, sorts and merge_asof on
    integers are many times faster than on strings); `deal_name` keeps the real id.
    """
    deals = data.deals.loc[data.deals["created_at"] <= as_of].copy()
    known = deals["closed_at"] <= as_of
    deals["closed_at"] = deals["closed_at"].where(known)
    # NaN-semantics strings, so that `outcome == "won"` is a plain boolean mask
    deals["outcome"] = deals["outcome"].where(known).astype("str")
    if "amount" not in deals:
        deals["amount"] = np.nan
    deals = deals.reset_index(drop=True)
    names = pd.Index(deals["deal_id"])
    deals = deals.rename(columns={"deal_id": "deal_name"}).assign(deal_id=np.arange(len(deals), dtype="int64"))
    events = _clip(data.stage_events, "entered_at", as_of, names)
    activities = _clip(data.activities, "occurred_at", as_of, names)
    spells = build_spells(deals, events, data.meta.stages, data.stage_events is not None)
    return PipelineState(as_of=as_of, stages=list(data.meta.stages), deals=deals, spells=spells,
                         events=events, activities=activities)


def _clip(table: pd.DataFrame | None, time_col: str, as_of: pd.Timestamp, names: pd.Index
          ) -> pd.DataFrame | None:
    """Rows of known deals dated <= as_of, keyed by the integer deal key, sorted by deal and time."""
    if table is None:
        return None
    key = names.get_indexer(table["deal_id"])
    keep = (key >= 0) & (table[time_col] <= as_of).to_numpy()
    kept = table.loc[keep].assign(deal_id=key[keep])
    if time_col == "occurred_at":  # activities are only ever aggregated per deal: no order needed
        return kept.reset_index(drop=True)
    order = np.lexsort((kept[time_col].to_numpy(), kept["deal_id"].to_numpy()))
    return kept.iloc[order].reset_index(drop=True)


def build_spells(deals: pd.DataFrame, events: pd.DataFrame | None, stages: list[str],
                 has_history: bool) -> pd.DataFrame:
    """One row per stay in a stage.

    A deal is in the first stage from creation until its first event (or, without a
    stage history at all, in `deals.stage` for its whole life). Event rows that repeat
    the previous stage are field updates, not stage changes, and are skipped. A spell
    ends at the next stage change or at the close; it is open (end NaT) otherwise.
    """
    entry_stage = stages[0]
    entries = deals[["deal_id", "created_at"]].rename(columns={"created_at": "entered_at"})
    if not has_history and "stage" in deals:
        entries = entries.assign(stage=deals["stage"].fillna(entry_stage).astype("string"))
    else:
        entries = entries.assign(stage=entry_stage)
    changes = entries.assign(_order=0)
    if events is not None and len(events):
        first = events.groupby("deal_id")["entered_at"].min()
        first_at = lookup(first, entries["deal_id"])
        # an implicit first-stage spell only where the history starts after creation
        changes = changes.loc[first_at.isna().to_numpy() | (first_at > entries["entered_at"]).to_numpy()]
        logged = events[["deal_id", "stage", "entered_at"]].assign(_order=1)
        changes = pd.concat([changes, logged], ignore_index=True)
    changes = changes.sort_values(["deal_id", "entered_at", "_order"], kind="stable").reset_index(drop=True)
    repeat = _same_as(changes["deal_id"], 1) & _same_as(changes["stage"], 1)
    changes = changes.loc[~repeat]
    return _spells_from_changes(changes.reset_index(drop=True), deals, stages)


def _same_as(s: pd.Series, shift: int) -> np.ndarray:
    """Whether each value equals its neighbour `shift` rows away (False at the ends)."""
    return s.eq(s.shift(shift)).fillna(False).to_numpy(dtype=bool)


def _spells_from_changes(changes: pd.DataFrame, deals: pd.DataFrame, stages: list[str]) -> pd.DataFrame:
    order = {s: i for i, s in enumerate(stages)}
    idx = changes["stage"].map(order).astype("int64")
    same_deal_next = pd.Series(_same_as(changes["deal_id"], -1), index=changes.index)
    next_start = changes["entered_at"].shift(-1).where(same_deal_next)
    next_idx = idx.shift(-1).where(same_deal_next)
    by_id = deals.set_index("deal_id")
    closed_at = lookup(by_id["closed_at"], changes["deal_id"])
    outcome = lookup(by_id["outcome"], changes["deal_id"])
    end = next_start.where(same_deal_next, closed_at).astype(deals["created_at"].dtype)
    has_next = same_deal_next.to_numpy(dtype=bool)
    forward = has_next & (next_idx.to_numpy(dtype="float64", na_value=np.nan) > idx.to_numpy())
    exit_ = np.select([forward, has_next, outcome.notna().to_numpy(dtype=bool)],
                      ["advanced", "regressed", outcome.astype(object).to_numpy()], default="open")
    return pd.DataFrame({"deal_id": changes["deal_id"].to_numpy(), "stage": changes["stage"].to_numpy(),
                         "stage_idx": idx.to_numpy(), "start": changes["entered_at"].to_numpy(),
                         "end": end.to_numpy(), "exit": exit_})


def value_at(events: pd.DataFrame | None, column: str, deal_ids: pd.Series, times: pd.Series) -> np.ndarray:
    """Last non-null `column` of each deal's events at or before its time (NaN if none known)."""
    out = np.full(len(deal_ids), np.nan, dtype=object if column == "expected_close_date" else "float64")
    if events is None or column not in events or not len(deal_ids):
        return _typed(out, column)
    ev = events.loc[events[column].notna(), ["deal_id", "entered_at", column]].sort_values("entered_at")
    query = pd.DataFrame({"deal_id": np.asarray(deal_ids), "t": np.asarray(times), "_i": np.arange(len(deal_ids))})
    query = query.loc[query["t"].notna()].astype({"deal_id": ev["deal_id"].dtype,
                                                  "t": ev["entered_at"].dtype}).sort_values("t")
    if not len(ev) or not len(query):
        return _typed(out, column)
    found = pd.merge_asof(query, ev, left_on="t", right_on="entered_at", by="deal_id", direction="backward")
    result = pd.Series(out).astype(ev[column].dtype)
    result.iloc[found["_i"].to_numpy()] = found[column].to_numpy()
    return result.to_numpy()


def _typed(out: np.ndarray, column: str) -> np.ndarray:
    return pd.Series(out).astype("datetime64[us]").to_numpy() if column == "expected_close_date" else out


def amount_at(state: PipelineState, deals: pd.DataFrame, times: pd.Series | pd.Timestamp) -> np.ndarray:
    """Each deal's amount as known at its time: the last event amount, else the deal's amount."""
    times = pd.Series(times, index=deals.index) if isinstance(times, pd.Timestamp) else times
    logged = value_at(state.events, "amount", deals["deal_id"], times)
    return np.where(np.isnan(logged), deals["amount"].to_numpy(dtype="float64", na_value=np.nan), logged)


def lookup(values: pd.Series, keys: pd.Series) -> pd.Series:
    """values[key] for each key, aligned with `keys` (NaN where absent).

    `reindex` rather than `Series.map`, which fails on an empty mapping of timestamps.
    """
    return pd.Series(values.reindex(keys.to_numpy()).to_numpy(), index=keys.index)


def days(delta: pd.Series) -> pd.Series:
    """Timedeltas as float days."""
    return delta / DAY

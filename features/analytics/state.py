"""The point-in-time state every pipeline metric is computed from.

`build_state(data, as_of)` keeps only what was known at `as_of` (deals created by then,
closes, stage events and activities dated <= as_of; a deal closed later is open) and
runs the snapshot engine (`features.snapshots`) on it: the per-event running state, so
any deal's stage, amount and expected close date at any t <= as_of is one as-of search
(`PipelineState.at`), and the table of stage *spells* (one row per stay of a deal in a
stage) that the stage-dwell features also read. Every metric, including the ones at
earlier dates (velocity trend, waterfall start), is then a filter on this state, so
nothing after `as_of` can leak in.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from features.arrays import event_arrays
from features.asof import asof_index
from features.dates import DAY
from features.schema import TIMESTAMP_DTYPE, CanonicalData
from features.snapshots import event_state, stage_seen_from, stage_spells, state_at

SPELL_EXITS = ("advanced", "regressed", "won", "lost", "open", "unknown")


@dataclass
class PipelineState:
    """What was known at `as_of`: deals (closes after as_of blanked), spells, events,
    activities, and the running state of every deal's events (`event_state`)."""

    as_of: pd.Timestamp
    stages: list[str]
    deals: pd.DataFrame  # deal_id (dense key = row position in the full state), deal_name, created_at, ...
    spells: pd.DataFrame  # deal_id, stage, stage_idx, start, end (NaT while open), dwell_days, exit
    events: pd.DataFrame | None  # every event row <= as_of, field updates included
    activities: pd.DataFrame | None
    running: dict[str, np.ndarray]  # features.snapshots.event_state of the events above
    index: tuple[np.ndarray, np.ndarray]  # its as-of index (features.asof.asof_index), built once

    def subset(self, deal_mask: pd.Series) -> "PipelineState":
        """The same state restricted to some deals (one group of a group-by)."""
        ids = self.deals.loc[deal_mask, "deal_id"]
        keep = lambda t: None if t is None else t.loc[t["deal_id"].isin(ids)]  # noqa: E731
        rows = np.isin(self.running["deal"], ids.to_numpy())
        running = {name: values[rows] for name, values in self.running.items()}
        return replace(self, deals=self.deals.loc[deal_mask], spells=keep(self.spells),
                       events=keep(self.events), activities=keep(self.activities),
                       running=running, index=running_index(running))

    def open_mask(self, t: pd.Timestamp) -> pd.Series:
        """Deals open at time t (t <= as_of)."""
        d = self.deals
        return (d["created_at"] <= t) & (d["closed_at"].isna() | (d["closed_at"] > t))

    def at(self, deal_ids: pd.Series, times: pd.Series | pd.Timestamp) -> dict[str, np.ndarray]:
        """Each deal's running state at its time (`features.snapshots.state_at`): stage_index,
        stage_entered_at, event_amount, expected_close_date, ... Times must not precede
        the deal's creation."""
        t = np.broadcast_to(np.asarray(times, dtype=TIMESTAMP_DTYPE) if not isinstance(times, pd.Timestamp)
                            else np.datetime64(times, "us"), len(deal_ids))
        return state_at(deal_ids.to_numpy(dtype="int64"), t, self.running, self.index)


def build_state(data: CanonicalData, as_of: pd.Timestamp) -> PipelineState:
    """Clip the canonical tables to `as_of` and run the snapshot engine on them.

    Inside the state `deal_id` is a dense integer key (joins, sorts and as-of searches on
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
    stages = list(data.meta.stages)
    created = deals["created_at"].to_numpy(dtype=TIMESTAMP_DTYPE)
    seen = stage_seen_from(data, created)  # None unless a current-state export
    running = event_state(created, event_arrays(deals["deal_name"], _stage_entries(data, deals, as_of), stages),
                          len(stages), seen)
    spells = spell_table(running, deals, stages)
    if seen is not None:
        spells = unseen_spells_unknown(spells, seen)
    return PipelineState(as_of=as_of, stages=stages, deals=deals, spells=spells, events=events,
                         activities=_clip(data.activities, "occurred_at", as_of, names), running=running,
                         index=running_index(running))


def running_index(running: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The as-of index of a running state, so `PipelineState.at` searches without re-sorting."""
    return asof_index(running["deal"], running["entered_at"])


def _stage_entries(data: CanonicalData, deals: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame | None:
    """The stage events dated <= as_of; without a stage history at all, a current-stage
    export's `deals.stage` as one entry at creation (the first stage where missing)."""
    if data.stage_events is not None:
        return data.stage_events.loc[(data.stage_events["entered_at"] <= as_of).to_numpy()]
    if "stage" not in deals:
        return None
    return pd.DataFrame({"deal_id": deals["deal_name"], "entered_at": deals["created_at"],
                         "stage": deals["stage"].astype("string").fillna(data.meta.stages[0])})


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


def spell_table(running: dict[str, np.ndarray], deals: pd.DataFrame, stages: list[str]) -> pd.DataFrame:
    """`features.snapshots.stage_spells` as a frame with stage names and how each spell
    ended: advanced / regressed (the next spell's stage is later / earlier), won / lost
    (ended by the close), open."""
    s = stage_spells(running, deals["closed_at"].to_numpy(dtype=TIMESTAMP_DTYPE))
    outcome = deals["outcome"].to_numpy(dtype=object)[s["deal"]]
    has_next = s["next_stage_index"] >= 0
    exit_ = np.select([has_next & (s["next_stage_index"] > s["stage_index"]), has_next, ~pd.isna(outcome)],
                      ["advanced", "regressed", outcome], default="open")
    return pd.DataFrame({"deal_id": s["deal"], "stage": np.asarray(stages, dtype=object)[s["stage_index"]],
                         "stage_idx": s["stage_index"], "start": s["entered_at"], "end": s["left_at"],
                         "dwell_days": s["dwell_days"], "entry_known": s["entry_known"], "exit": exit_})


def unseen_spells_unknown(spells: pd.DataFrame, seen_from: np.ndarray) -> pd.DataFrame:
    """Spells of a current-state export (`meta.stage_history` "snapshots"), with
    `seen_from` = `features.snapshots.stage_seen_from` per (dense) deal id, the one rule of
    what an export saw. A stay that began before the deal's first sighting was never observed
    at all: a deal that closed from it was won or lost at an unknown stage (exit "unknown"),
    not in the first stage. A stay's length is known only if it began after that sighting
    (an export showed the change): `entry_known` of the spells, the features' own rule
    (`features.snapshots.event_state`); else dwell_days is NaN, so no time in stage, stall
    threshold or bottleneck reads it."""
    seen = pd.Series(np.asarray(seen_from)[spells["deal_id"].to_numpy()], index=spells.index)
    stage_unseen = ~(spells["start"] >= seen).to_numpy()  # NaT (never seen): unseen
    closed = spells["exit"].isin(["won", "lost"]).to_numpy()
    return spells.assign(dwell_days=spells["dwell_days"].mask(~spells["entry_known"].to_numpy()),
                         exit=spells["exit"].mask(stage_unseen & closed, "unknown"))


def amount_at(state: PipelineState, deals: pd.DataFrame, times: pd.Series | pd.Timestamp) -> np.ndarray:
    """Each deal's amount as known at its time: the last event amount, else the deal's amount."""
    logged = state.at(deals["deal_id"], times)["event_amount"]
    return np.where(np.isnan(logged), deals["amount"].to_numpy(dtype="float64", na_value=np.nan), logged)


def lookup(values: pd.Series, keys: pd.Series) -> pd.Series:
    """values[key] for each key, aligned with `keys` (NaN where absent).

    `reindex` rather than `Series.map`, which fails on an empty mapping of timestamps.
    """
    return pd.Series(values.reindex(keys.to_numpy()).to_numpy(), index=keys.index)


def days(delta: pd.Series) -> pd.Series:
    """Timedeltas as float days."""
    return delta / DAY

"""Point-in-time snapshots: which deals are open at which as-of dates, and each deal's
pipeline state as it was then (stage, amount, expected close date, activity counts).

Everything here is per deal (no state shared across deals), so a Dask version can run
the same functions on a partition of deals with their own events and activities.
Over 300 lines: the one point-in-time engine (open deals at T, their running state, stage
spells, and which stage entries a current-state export did not observe) kept in one place.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from features.arrays import event_arrays
from features.asof import (
    asof_index,
    asof_positions,
    asof_search,
    ffill_index,
    group_cumsum,
    group_starts,
    run_ends,
    run_starts,
    shifted,
    take,
)
from features.dates import as_of_timestamps
from features.errors import NotEnoughData
from features.schema import TIMESTAMP_DTYPE, CanonicalData

NAT = np.datetime64("NaT", "us")

# running state carried by every prepared event row and picked up by one as-of search
STATE_COLUMNS = ["stage_index", "stage_entered_at", "stage_entry_known", "stage_changes", "stage_regressions",
                 "furthest_stage_index", "event_amount", "first_amount", "amount_changes",
                 "expected_close_date", "close_date_pushes", "close_date_days_pushed"]


def as_of_grid(data: CanonicalData, freq: str = "W-MON", start=None, end=None) -> pd.DatetimeIndex:
    """Regular as-of dates (weekly on Mondays by default) from the first creation to data_end."""
    if data.meta.static:
        raise NotEnoughData("a static lead export has no dates, so it has no as-of grid: "
                            "use FeatureBuilder.transform_static")
    start = pd.Timestamp(start) if start is not None else data.deals["created_at"].min()
    end = pd.Timestamp(end) if end is not None else data.data_end
    grid = pd.date_range(start.normalize(), end, freq=freq)
    if len(grid) == 0:
        raise NotEnoughData(f"no '{freq}' as-of date between {start} and {end}: widen the range "
                            f"or use a shorter frequency")
    return pd.DatetimeIndex(grid).astype(TIMESTAMP_DTYPE)


def snapshot_positions(deals: pd.DataFrame, as_of: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
    """(deal row position, as-of value) for every deal open at every as-of date.

    Open at T: created_at <= T and (closed_at is NaT or closed_at > T). Two searchsorted
    calls give each deal's run of as-of dates; np.repeat expands them (no cross join).
    """
    t = as_of.to_numpy(dtype=TIMESTAMP_DTYPE)
    created = deals["created_at"].to_numpy(dtype=TIMESTAMP_DTYPE)
    closed = deals["closed_at"].to_numpy(dtype=TIMESTAMP_DTYPE) if "closed_at" in deals \
        else np.full(len(deals), np.datetime64("NaT"), dtype=TIMESTAMP_DTYPE)
    first = np.where(np.isnat(created), len(t), np.searchsorted(t, created, side="left"))
    stop = np.where(np.isnat(closed), len(t), np.searchsorted(t, closed, side="left"))
    counts = np.clip(stop - first, 0, None)
    rows = np.repeat(np.arange(len(deals)), counts)
    run_start = np.repeat(np.cumsum(counts) - counts, counts)
    t_index = np.repeat(first, counts) + (np.arange(len(rows)) - run_start)
    return rows, t[t_index]


def running_state(data: CanonicalData) -> dict[str, np.ndarray]:
    """`event_state` of every deal of `data` over all its events. Every running column is
    cumulative, so its value at a deal's latest event at or before T uses nothing dated
    after T: compute it once and ask `deals_at` for as many dates as needed."""
    stages = _stage_names(data)
    created = data.deals["created_at"].to_numpy(dtype=TIMESTAMP_DTYPE)
    return event_state(created, event_arrays(data.deals["deal_id"], data.stage_events, stages), len(stages),
                       stage_seen_from(data, created))


def stage_seen_from(data: CanonicalData, created: np.ndarray) -> np.ndarray | None:
    """Per deal (aligned with `created`), the time from which its stage changes are seen as
    they happen; None for a recorded stage history (every entry is dated as it happened).

    In a current-state export (`meta.stage_history` "snapshots") a stage is a fact dated at
    the export that showed it, not at its entry: the first export at or after a deal's
    creation shows where the deal stands, not since when. A stay is timed only if it began
    after that first sighting (the deal was seen elsewhere by an earlier export, and the
    change is dated at the export that showed it), so its days in stage are known; every
    earlier stay, the first stage from creation included, has an unknown entry. The exports
    are the dates of the stage events (ingest writes them only at export dates) and the data
    end. Point in time: at T only exports up to T can date a stay entered by T.
    """
    if data.meta.stage_history != "snapshots":
        return None
    events = data.stage_events
    dates = [] if events is None else [events["entered_at"].to_numpy(dtype=TIMESTAMP_DTYPE)]
    if data.meta.data_end is not None:
        dates.append(np.array([np.datetime64(data.meta.data_end, "us")], dtype=TIMESTAMP_DTYPE))
    exports = np.unique(np.concatenate(dates)) if dates else np.zeros(0, TIMESTAMP_DTYPE)
    exports = exports[~np.isnat(exports)]
    first = np.searchsorted(exports, created, side="left")
    seen = exports[np.minimum(first, len(exports) - 1)] if len(exports) else np.full(len(created), NAT)
    return np.where((first < len(exports)) & ~np.isnat(created), seen, NAT).astype(TIMESTAMP_DTYPE)


def deals_at(data: CanonicalData, as_of, running: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """What each deal looked like at T: one row per deal open at T (created at or before
    T, not closed by T), from events dated at or before T only.

    The one place outside the feature matrix that answers "which stage was this deal in
    at T, since when, for what amount": pipeline analytics, the forecast's risk list, the
    backtest's weighted pipeline, the oracle and the pyfunc example all read it. Columns:
    deal_id, stage (name), stage_index, stage_entered_at and days_in_stage (NaT / NaN when
    the entry was not observed: `stage_seen_from`),
    furthest_stage_index, stage_changes, stage_regressions, amount (latest known at T;
    deals.amount for deals with no amount on an event dated at or before T),
    expected_close_date (latest known at T), close_date_pushes, close_date_days_pushed,
    deal_age_days. `running`: `running_state(data)`, when the caller asks for many dates.
    """
    t = as_of_timestamps(as_of)
    if len(t) != 1:
        raise ValueError("deals_at takes one as-of date")
    deals = data.deals.reset_index(drop=True)
    pos, at = snapshot_positions(deals, t)
    stages = _stage_names(data)
    state = state_at(pos, at, running_state(data) if running is None else running)
    stage_index = state["stage_index"].astype("int64")
    amount = deals["amount"].to_numpy(dtype="float64", na_value=np.nan)[pos]
    created = deals["created_at"].to_numpy(dtype=TIMESTAMP_DTYPE)
    day = np.timedelta64(1, "D")
    entered = np.where(state["stage_entry_known"], state["stage_entered_at"], NAT)
    return pd.DataFrame({
        "deal_id": deals["deal_id"].to_numpy()[pos],
        "stage": pd.array(np.asarray(stages, dtype=object)[stage_index], dtype="string"),
        "stage_index": stage_index,
        "stage_entered_at": entered,
        "days_in_stage": (at - entered) / day,
        "furthest_stage_index": state["furthest_stage_index"].astype("int64"),
        "stage_changes": state["stage_changes"],
        "stage_regressions": state["stage_regressions"],
        "amount": np.where(state["amount_seen"], state["event_amount"], amount),
        "expected_close_date": state["expected_close_date"],
        "close_date_pushes": state["close_date_pushes"],
        "close_date_days_pushed": state["close_date_days_pushed"],
        "deal_age_days": (at - created[pos]) / day,
    })


def _stage_names(data: CanonicalData) -> list[str]:
    return list(data.meta.stages) if data.meta.stages else ["(none)"]


def event_state(created: np.ndarray, events: dict[str, np.ndarray], n_stages: int,
                seen_from: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-event running state of each deal, sorted by (deal, entered_at).

    `events`: deal (position, -1 = another deal's), stage_index, entered_at, amount,
    expected_close_date. A deal whose history does not start at created_at is given an
    implied entry into the first stage at created_at (with no events at all it stays
    there until it closes). Rows repeating the previous stage are field updates (amount,
    expected close date). Column `has_event_amount` says whether any of the deal's
    events carries an amount (if none does, deals.amount is the only amount known).
    `seen_from`: per deal, `stage_seen_from` (None: every entry observed); column
    `stage_entry_known` says whether the current stay's entry was observed.
    """
    keep = events["deal"] >= 0  # events of deals outside this partition/payload belong to someone else
    ev = {name: values[keep] for name, values in events.items()}
    first_at = _first_time(ev["deal"], ev["entered_at"], len(created))
    implied = np.flatnonzero(~np.isnat(created) & (np.isnat(first_at) | (first_at > created)))
    k = len(implied)  # np.concatenate, not np.r_: a one-deal request notices np.r_'s parsing
    cols = {"deal": np.concatenate([implied, ev["deal"]]).astype("int64"),
            "stage_index": np.concatenate([np.zeros(k, "int64"), ev["stage_index"]]).astype("int64"),
            "entered_at": np.concatenate([created[implied], ev["entered_at"]]).astype(TIMESTAMP_DTYPE),
            "amount": np.concatenate([np.full(k, np.nan), ev["amount"]]).astype("float64"),
            "expected_close_date": np.concatenate([np.full(k, np.datetime64("NaT"), dtype=TIMESTAMP_DTYPE),
                                                   ev["expected_close_date"]]).astype(TIMESTAMP_DTYPE)}
    # sorted by (deal, entered_at), ties in input order, a missing time last (as sort_values does)
    entered = cols["entered_at"].view("int64")
    order = np.lexsort((np.where(np.isnat(cols["entered_at"]), np.iinfo("int64").max, entered), cols["deal"]))
    out = _running_state({name: values[order] for name, values in cols.items()}, n_stages)
    out["stage_entry_known"] = np.ones(len(out["deal"]), bool) if seen_from is None \
        else out["stage_entered_at"] > np.asarray(seen_from, dtype=TIMESTAMP_DTYPE)[out["deal"]]
    return out


def stage_spells(running: dict[str, np.ndarray], closed_at: np.ndarray) -> dict[str, np.ndarray]:
    """One row per stay of a deal in a stage, from the running state of `event_state`,
    in (deal, entered_at) order: deal, stage_index, entered_at, left_at, next_stage_index,
    dwell_days, entry_known (the entry was observed: `stage_seen_from`).

    A spell starts where the stage changes (field updates do not start one) and ends at
    the deal's next stage change, else at its close (`closed_at`, per deal position, NaT
    while open as known at the cut-off); left_at and dwell_days are NaT/NaN while the
    spell is open. next_stage_index is the stage of the next spell, -1 when the spell
    ended by the close or is still open. The stage-dwell features and the pipeline
    analytics' time in stage and stall thresholds all read this table.
    """
    spell = np.asarray(running["spell_start"], dtype=bool)
    deal = np.asarray(running["deal"])[spell]
    entered = np.asarray(running["entered_at"]).astype(TIMESTAMP_DTYPE)[spell]
    stage = np.asarray(running["stage_index"])[spell].astype("int64")
    same_deal_next = ~run_ends(deal)
    next_start = np.concatenate([entered[1:], np.full(min(len(entered), 1), np.datetime64("NaT"), TIMESTAMP_DTYPE)])
    next_stage = np.concatenate([stage[1:], np.full(min(len(stage), 1), -1, "int64")])
    left = np.where(same_deal_next, next_start, closed_at.astype(TIMESTAMP_DTYPE)[deal]).astype(TIMESTAMP_DTYPE)
    return {"deal": deal, "stage_index": stage, "entered_at": entered, "left_at": left,
            "next_stage_index": np.where(same_deal_next, next_stage, -1),
            "dwell_days": (left - entered) / np.timedelta64(1, "D"),
            "entry_known": np.asarray(running["stage_entry_known"], dtype=bool)[spell]}


def _first_time(deal: np.ndarray, at: np.ndarray, n_deals: int) -> np.ndarray:
    """Earliest non-missing time per deal position (NaT for a deal with none)."""
    first = np.full(n_deals, np.datetime64("NaT"), dtype=TIMESTAMP_DTYPE)
    known = ~np.isnat(at)
    deal, at = deal[known], at[known]
    order = np.lexsort((at.view("int64"), deal))
    deal, at = deal[order], at[order]
    head = run_starts(deal)
    first[deal[head]] = at[head]
    return first


def _running_state(ev: dict[str, np.ndarray], n_stages: int) -> dict[str, np.ndarray]:
    """Cumulative per-deal columns on events sorted by (deal, entered_at), all numpy."""
    deal = ev["deal"]
    stage = ev["stage_index"]
    n = len(deal)
    start = group_starts(deal)
    first = start == np.arange(n)
    prev_stage = shifted(stage, -1)
    change = ~first & (stage != prev_stage)
    at = ev["entered_at"]
    out = {"deal": deal, "stage_index": stage.astype("float64"), "entered_at": at, "amount": ev["amount"],
           "expected_close_date": None,  # filled below; keeps the column order of the input
           "spell_start": first | change,
           "stage_entered_at": at[ffill_index(first | change, start)],
           "stage_changes": group_cumsum(change.astype("float64"), start),
           "stage_regressions": group_cumsum((change & (stage < prev_stage)).astype("float64"), start)}
    offset = deal.astype("int64") * n_stages
    out["furthest_stage_index"] = (np.maximum.accumulate(offset + stage) - offset).astype("float64") \
        if n else np.zeros(0)

    amount = ev["amount"]
    has_amount = ~np.isnan(amount)
    known, prev_known = _known_and_previous(has_amount, start)
    out["event_amount"] = take(amount, known)
    seen = group_cumsum(has_amount.astype("float64"), start)
    out["first_amount"] = take(amount, ffill_index(has_amount & (seen == 1), start))
    prev_amount = take(amount, prev_known)
    out["amount_changes"] = group_cumsum((has_amount & ~np.isnan(prev_amount)
                                          & (amount != prev_amount)).astype("float64"), start)
    out["has_event_amount"] = _any_in_run(has_amount, first)
    out["amount_seen"] = seen > 0  # an amount on this event or an earlier one of the deal

    ecd = ev["expected_close_date"]
    known, prev_known = _known_and_previous(~np.isnat(ecd), start)
    out["expected_close_date"] = take(ecd, known)
    prev_ecd = take(ecd, prev_known)
    pushed_days = (ecd - prev_ecd) / np.timedelta64(1, "D")
    push = ~np.isnat(ecd) & ~np.isnat(prev_ecd) & (pushed_days > 0)
    out["close_date_pushes"] = group_cumsum(push.astype("float64"), start)
    out["close_date_days_pushed"] = group_cumsum(np.where(push, pushed_days, 0.0), start)
    return out


def _any_in_run(values: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Per row, whether any row of its run (runs start where `first`) is True."""
    if not len(values):
        return np.zeros(0, bool)
    run = np.cumsum(first) - 1
    return np.logical_or.reduceat(values, np.flatnonzero(first))[run]


def _known_and_previous(valid: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Latest valid row up to each row, and the latest valid row strictly before it."""
    known = ffill_index(valid, start)
    prev = shifted(known, -1)
    return known, np.where(prev >= start, prev, -1)


def state_at(snap_deal: np.ndarray, snap_at: np.ndarray, prepared: dict[str, np.ndarray],
             index: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The prepared state (`event_state`) of each (deal, T) row: the deal's latest event
    with entered_at <= T. `index`: the prepared state's `asof_index`, when the caller
    searches the same state many times."""
    deal = np.asarray(prepared["deal"])
    index = asof_index(deal, np.asarray(prepared["entered_at"])) if index is None else index
    pos = asof_search(index, deal, snap_deal, snap_at)
    if (pos < 0).any():  # cannot happen: every deal has an entry at created_at <= T
        raise AssertionError("a snapshot row has no stage state: deal created after its as-of date")
    return {c: np.asarray(prepared[c])[pos] for c in ["has_event_amount", "amount_seen"] + STATE_COLUMNS}


def activity_counts(snap_deal: np.ndarray, snap_at: np.ndarray, activities: dict[str, np.ndarray],
                    windows: Sequence[int]) -> dict[str, np.ndarray]:
    """Activities in (T - w days, T] per window, and days since the last one at or before T.
    `activities`: deal (position, -1 = another deal's) and occurred_at, any order.

    With activities sorted by (deal, time), the number of a deal's activities up to t is
    (row of the latest one <= t) - (row of the deal's first one) + 1.
    """
    deal, at = activities["deal"], activities["occurred_at"].astype(TIMESTAMP_DTYPE)
    order = np.lexsort((at, deal))
    order = order[deal[order] >= 0]
    deal, at = deal[order], at[order]
    # one search for T and every T - w: row k * n + i asks about snapshot row i at the k-th time
    n, cutoffs = len(snap_deal), [np.timedelta64(0, "D"), *(np.timedelta64(int(w), "D") for w in windows)]
    times = np.concatenate([snap_at - c for c in cutoffs])
    pos = asof_positions(deal, at, np.tile(snap_deal, len(cutoffs)), times).reshape(len(cutoffs), n)
    first_row = np.searchsorted(deal, snap_deal, side="left")
    upto = np.where(pos >= 0, pos - first_row + 1, 0).astype("float64")  # activities up to each time
    out = {f"activities_{w}d": upto[0] - upto[k + 1] for k, w in enumerate(windows)}
    last = pos[0]
    last_at = np.where(last >= 0, at[np.maximum(last, 0)] if len(at) else snap_at, np.datetime64("NaT"))
    out["days_since_last_activity"] = (snap_at - last_at.astype(TIMESTAMP_DTYPE)) / np.timedelta64(1, "D")
    return out

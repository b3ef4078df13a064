"""Money moving through the pipeline: sales velocity, the change waterfall, coverage."""
from __future__ import annotations

import numpy as np
import pandas as pd

from features.analytics.funnel import ratio, stat, won_deals
from features.analytics.state import PipelineState, amount_at, days
from features.dates import DAY
from features.winrates import closed_win_rate

HISTORY_DAYS = 365  # win rate, deal size and cycle for velocity: closes in the trailing year
TREND_MONTHS = 6


def qualified_index(stages: list[str]) -> int:
    """Index of the first 'qualified' stage: named so, else the second stage."""
    lowered = [s.lower() for s in stages]
    return lowered.index("qualified") if "qualified" in lowered else min(1, len(stages) - 1)


def velocity_at(state: PipelineState, t: pd.Timestamp, stale_ids: np.ndarray | None = None) -> dict:
    """Open qualified deals at t x win rate x average won amount / average won cycle days.

    Win rate, amount and cycle come from deals closed in the year before t. The open
    deals include the stale ones; given `stale_ids` (dense ids), how many of them are stale.
    """
    since = t - HISTORY_DAYS * DAY
    d = state.deals
    closed = d.loc[(d["closed_at"] > since) & (d["closed_at"] <= t), "outcome"]
    won = won_deals(state, since, t)
    open_ids = d.loc[state.open_mask(t), "deal_id"]
    qualified = open_ids[state.at(open_ids, t)["stage_index"] >= qualified_index(state.stages)]
    win_rate = closed_win_rate(closed == "won", closed == "lost")
    size, cycle = stat(won["amount"].mean()), stat(won["cycle_days"].mean())
    per_day = None
    if None not in (win_rate, size, cycle) and cycle > 0:
        per_day = len(qualified) * win_rate * size / cycle
    out = {"as_of": t.isoformat(), "open_qualified": int(len(qualified)), "win_rate": win_rate,
           "average_deal_size": size, "average_cycle_days": cycle, "per_day": per_day}
    if stale_ids is not None:
        out.update(includes_stale_deals=True, open_qualified_stale=int(np.isin(qualified, stale_ids).sum()))
    return out


def velocity(state: PipelineState, stale_ids: np.ndarray | None = None) -> dict:
    """Velocity at as_of and at monthly points over the last TREND_MONTHS months."""
    points = [state.as_of - pd.DateOffset(months=k) for k in range(TREND_MONTHS, -1, -1)]
    now = velocity_at(state, state.as_of, stale_ids)
    return {**now, "qualified_stage": state.stages[qualified_index(state.stages)], "history_days": HISTORY_DAYS,
            "trend": [{k: v for k, v in velocity_at(state, t).items()} for t in points]}


def cents(amounts: np.ndarray) -> np.ndarray:
    """Amounts as whole cents (unknown amounts count as 0)."""
    return np.round(np.nan_to_num(amounts.astype("float64")) * 100).astype("int64")


def changes(state: PipelineState, window_days: int) -> dict:
    """Waterfall of the open pipeline amount over (as_of - window_days, as_of].

    start + new + amount_up - amount_down - won - lost = end, exactly: each deal enters
    at its amount at the window start (or at creation), leaves at its amount when it
    closed (or stays at its amount at as_of), and the difference is its amount change.
    Pushed out / pulled in (net move of the expected close date) do not change the total
    and are reported beside the waterfall with the amount of the deals that moved.
    """
    start, end = state.as_of - window_days * DAY, state.as_of
    d = state.deals
    carried = state.open_mask(start)
    created = (d["created_at"] > start) & (d["created_at"] <= end)
    moving = d.loc[carried | created]
    is_new = created[moving.index]
    entry_t = moving["created_at"].where(is_new, start)
    closed_in = moving["closed_at"].notna()  # open at start or created since, so closed inside the window
    exit_t = moving["closed_at"].where(closed_in, end)
    # whole cents, so that the waterfall adds up exactly rather than to float rounding
    entry = cents(amount_at(state, moving, entry_t))
    exit_ = cents(amount_at(state, moving, exit_t))
    delta = exit_ - entry
    outcome = moving["outcome"].to_numpy()
    parts = {"new": (is_new.to_numpy(), entry), "won": (outcome == "won", exit_),
             "lost": (outcome == "lost", exit_), "amount_up": (delta > 0, delta), "amount_down": (delta < 0, -delta)}
    sums = {k: int(v[m].sum()) for k, (m, v) in parts.items()}
    steps = {k: {"count": int(m.sum()), "amount": sums[k] / 100} for k, (m, _v) in parts.items()}
    start_cents = int(entry[~is_new.to_numpy()].sum())
    end_cents = int(cents(amount_at(state, state.deals.loc[state.open_mask(end)], end)).sum())
    flows = sums["new"] + sums["amount_up"] - sums["amount_down"] - sums["won"] - sums["lost"]
    return {"window_start": start.isoformat(), "window_end": end.isoformat(), "window_days": window_days,
            "start_amount": start_cents / 100, **steps, "end_amount": end_cents / 100,
            "residual": (end_cents - start_cents - flows) / 100,
            "deals_without_amount": int(moving["amount"].isna().sum()) if state.events is None else None,
            **close_date_moves(state, moving, entry_t, exit_t, exit_)}


def close_date_moves(state: PipelineState, moving: pd.DataFrame, entry_t: pd.Series, exit_t: pd.Series,
                     exit_amount: np.ndarray) -> dict:
    """Deals whose expected close date ended the window later (pushed out) or earlier (pulled in)."""
    if state.events is None or not state.events["expected_close_date"].notna().any():
        return {"pushed_out": None, "pulled_in": None}  # no close dates known: moves are unknown, not zero
    before = pd.Series(state.at(moving["deal_id"], entry_t)["expected_close_date"])
    # no date known at entry (e.g. a new deal dated after creation): compare with its first date
    ev = state.events.loc[state.events["expected_close_date"].notna()]
    first = pd.Series(ev.groupby("deal_id")["expected_close_date"].first().reindex(moving["deal_id"]).to_numpy())
    before = before.fillna(first)
    after = pd.Series(state.at(moving["deal_id"], exit_t)["expected_close_date"])
    moved = days(after - before).to_numpy(dtype="float64", na_value=np.nan)
    out = {}
    for name, m in (("pushed_out", moved > 0), ("pulled_in", moved < 0)):
        out[name] = {"count": int(m.sum()), "amount": int(exit_amount[m].sum()) / 100, "days": float(np.abs(moved[m]).sum())}
    return out


def coverage(state: PipelineState, target: float | None, stale_ids: np.ndarray | None = None) -> dict:
    """Pipeline coverage of the calendar quarter containing as_of (stale deals included;
    `stale_pipeline_in_period` says how much of it they are, given `stale_ids`)."""
    as_of = state.as_of
    period_start = as_of.to_period("Q").start_time
    period_end = (as_of.to_period("Q") + 1).start_time
    won = won_deals(state, period_start - pd.Timedelta(microseconds=1), as_of)
    closed_won = float(won["amount"].sum())
    d = state.deals.loc[state.open_mask(as_of)]
    amounts = np.nan_to_num(amount_at(state, d, as_of))
    expected = pd.Series(state.at(d["deal_id"], as_of)["expected_close_date"])
    dated = bool(expected.notna().any())
    in_period = ((expected >= period_start) & (expected < period_end)).to_numpy() if dated else np.ones(len(d), bool)
    pipeline = float(amounts[in_period].sum())
    remaining = None if target is None else float(target) - closed_won
    definition = ("open pipeline amount expected to close in the period / (target - closed-won so far in the period)"
                  if dated else "no expected close dates known: all open pipeline amount / "
                                "(target - closed-won so far in the period)")
    return {"definition": definition, "period_start": period_start.isoformat(), "period_end": period_end.isoformat(),
            "target": None if target is None else float(target), "closed_won": closed_won,
            "pipeline_in_period": pipeline, "deals_in_period": int(in_period.sum()), "remaining": remaining,
            "coverage": ratio(pipeline, remaining) if remaining is not None and remaining > 0 else None,
            "target_met": None if remaining is None else remaining <= 0, "includes_stale_deals": True,
            "stale_pipeline_in_period": None if stale_ids is None else
            float(amounts[in_period & d["deal_id"].isin(stale_ids).to_numpy()].sum())}

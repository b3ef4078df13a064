"""Small random CRM histories for the feature tests, plus hypothesis strategies.

A history is generated from a seed (so hypothesis shrinks the seed and the knobs, and
a failing case is reproducible by its seed). Times sit on the hour so that facts dated
exactly at an as-of date happen often: the boundary is where point-in-time bugs live.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import strategies as st

from features.schema import TIMESTAMP_DTYPE, CanonicalData, DatasetMeta

STAGES = ["lead", "qualified", "proposal", "negotiation"]
START = pd.Timestamp("2024-01-01")
DATA_END = START + pd.Timedelta(days=150)
OWNERS, SOURCES, SEGMENTS = ["ann", "bob", "cy"], ["web", "referral"], ["smb", "enterprise"]
ACCOUNTS, INDUSTRIES = ["acc1", "acc2", "acc3", "acc4"], ["retail", "tech", "health"]


def hours(n) -> pd.Timedelta:
    return pd.Timedelta(hours=int(n))


def random_history(seed: int, n_deals: int = 8, with_events: bool = True, with_activities: bool = True,
                   event_amounts: bool = True) -> CanonicalData:
    """A valid canonical dataset: events and activities between creation and close."""
    rng = np.random.default_rng(seed)
    deals, events, acts = [], [], []
    for i in range(n_deals):
        deal = _random_deal(rng, f"d{i}")
        deals.append(deal)
        if with_events:
            events += _random_events(rng, deal, event_amounts and rng.random() < 0.8)
        if with_activities:
            acts += _random_activities(rng, deal)
    return make_data(pd.DataFrame(deals), pd.DataFrame(events) if with_events else None,
                     pd.DataFrame(acts) if with_activities else None)


def make_data(deals: pd.DataFrame, events: pd.DataFrame | None, acts: pd.DataFrame | None) -> CanonicalData:
    """Type the frames as the validator would (string ids, us timestamps, sorted children)."""
    deals = deals.copy()
    for col in ["created_at", "closed_at"]:
        deals[col] = pd.to_datetime(deals[col]).astype(TIMESTAMP_DTYPE)
    for col in ["deal_id", "outcome", "owner", "source", "segment", "account_id", "industry"]:
        deals[col] = deals[col].astype("string")
    deals["amount"] = deals["amount"].astype("float64")
    deals["employees"] = deals["employees"].astype("float64")
    if events is not None:
        events = events.reindex(columns=["deal_id", "stage", "entered_at", "amount", "expected_close_date"])
        events = events.astype({"deal_id": "string", "stage": "string", "amount": "float64"})
        for col in ["entered_at", "expected_close_date"]:
            events[col] = pd.to_datetime(events[col]).astype(TIMESTAMP_DTYPE)
        events = events.sort_values(["deal_id", "entered_at"], kind="stable").reset_index(drop=True)
    if acts is not None:
        acts = acts.reindex(columns=["deal_id", "occurred_at", "type"]).astype({"deal_id": "string", "type": "string"})
        acts["occurred_at"] = pd.to_datetime(acts["occurred_at"]).astype(TIMESTAMP_DTYPE)
        acts = acts.sort_values(["deal_id", "occurred_at"], kind="stable").reset_index(drop=True)
    meta = DatasetMeta(stages=list(STAGES), attributes={"industry": "categorical", "employees": "numeric"},
                       data_end=DATA_END)
    return CanonicalData(deals=deals.reset_index(drop=True), meta=meta, stage_events=events, activities=acts)


def _random_deal(rng: np.random.Generator, deal_id: str) -> dict:
    created = START + hours(rng.integers(0, 24 * 100))
    closed = created + hours(rng.integers(0, 24 * 60)) if rng.random() < 0.7 else pd.NaT
    if pd.notna(closed) and closed > DATA_END:
        closed = pd.NaT
    return {"deal_id": deal_id, "created_at": created, "amount": float(rng.integers(1, 50) * 100),
            "closed_at": closed, "outcome": (rng.choice(["won", "lost"]) if pd.notna(closed) else None),
            "owner": rng.choice(OWNERS), "source": rng.choice(SOURCES), "segment": rng.choice(SEGMENTS),
            "account_id": rng.choice(ACCOUNTS), "industry": rng.choice(INDUSTRIES),
            "employees": float(rng.integers(1, 500))}


def deal_end(deal) -> pd.Timestamp:
    """Latest time a child row of this deal may carry."""
    return deal["closed_at"] if pd.notna(deal["closed_at"]) else DATA_END


def _random_events(rng: np.random.Generator, deal: dict, with_amounts: bool) -> list[dict]:
    n = int(rng.integers(0, 7))
    span = int((deal_end(deal) - deal["created_at"]) / pd.Timedelta(hours=1))
    times = sorted(deal["created_at"] + hours(h) for h in rng.integers(0, span + 1, n))
    if n and rng.random() < 0.5:
        times[0] = deal["created_at"]
    stage = int(rng.integers(0, 2))
    amount, ecd = float(rng.integers(1, 50) * 100), deal["created_at"] + hours(rng.integers(24, 24 * 90))
    out = []
    for t in times:
        stage = int(np.clip(stage + rng.choice([-1, 0, 1, 1]), 0, len(STAGES) - 1))
        if rng.random() < 0.4:
            amount = float(rng.integers(1, 50) * 100)
        if rng.random() < 0.4:
            ecd = ecd + hours(rng.integers(-24 * 10, 24 * 30))
        out.append({"deal_id": deal["deal_id"], "stage": STAGES[stage], "entered_at": t,
                    "amount": amount if with_amounts and rng.random() < 0.8 else np.nan,
                    "expected_close_date": ecd if rng.random() < 0.8 else pd.NaT})
    return out


def _random_activities(rng: np.random.Generator, deal: dict) -> list[dict]:
    n = int(rng.integers(0, 9))
    span = int((deal_end(deal) - deal["created_at"]) / pd.Timedelta(hours=1))
    return [{"deal_id": deal["deal_id"], "occurred_at": deal["created_at"] + hours(h),
             "type": rng.choice(["call", "email", "meeting"])} for h in rng.integers(0, span + 1, n)]


def random_as_of(rng: np.random.Generator, data: CanonicalData) -> pd.Timestamp:
    """Often exactly a close, a creation or an event time (the boundaries); else a random hour."""
    closes = data.deals["closed_at"].dropna()
    others = [data.deals["created_at"]] + ([] if data.stage_events is None else [data.stage_events["entered_at"]])
    others = pd.concat(others, ignore_index=True)
    u = rng.random()
    if u < 0.25 and len(closes):
        return pd.Timestamp(closes.iloc[int(rng.integers(0, len(closes)))])
    if u < 0.5:
        return pd.Timestamp(others.iloc[int(rng.integers(0, len(others)))])
    return START + hours(rng.integers(24 * 10, 24 * 110))  # while many deals are open


@st.composite
def histories(draw, min_deals: int = 3, max_deals: int = 12):
    """(data, as_of, rng) with random optional tables; rng drives later perturbations."""
    seed = draw(st.integers(0, 2**31 - 1))
    data = random_history(seed, n_deals=draw(st.integers(min_deals, max_deals)),
                          with_events=draw(st.booleans()) or draw(st.booleans()),
                          with_activities=draw(st.booleans()) or draw(st.booleans()),
                          event_amounts=draw(st.booleans()) or draw(st.booleans()))
    rng = np.random.default_rng(seed + 1)
    return data, random_as_of(rng, data), rng


# ---- brute-force point-in-time state: per-deal Python loops, obviously the spec -------------
DAY = pd.Timedelta(days=1)


def deal_path(data: CanonicalData, deal, cutoff: pd.Timestamp) -> list[tuple]:
    """(time, stage, amount, expected close date) of the deal's events dated <= cutoff, in
    time order (ties in input order), after an implied entry into the first stage at
    creation unless the deal's history starts there."""
    evs = [] if data.stage_events is None else \
        [e for e in data.stage_events.itertuples() if e.deal_id == deal.deal_id and e.entered_at <= cutoff]
    evs = sorted(evs, key=lambda e: e.entered_at)  # sorted() is stable: ties keep input order
    path = [(e.entered_at, e.stage, e.amount, e.expected_close_date) for e in evs]
    if not path or path[0][0] > deal.created_at:
        path.insert(0, (deal.created_at, STAGES[0], np.nan, pd.NaT))
    return path


def state_oracle(data: CanonicalData, T: pd.Timestamp) -> pd.DataFrame:
    """What `features.snapshots.deals_at(data, T)` must return, by walking each open deal's
    events one by one."""
    rows = []
    for d in data.deals.itertuples():
        if d.created_at > T or (pd.notna(d.closed_at) and d.closed_at <= T):
            continue
        path = deal_path(data, d, T)
        stage, entered = path[0][1], path[0][0]
        changes = regressions = pushes = 0
        furthest, days_pushed, ecd = STAGES.index(stage), 0.0, pd.NaT
        for t, s, _amount, new_ecd in path:  # the first row never changes the stage
            if s != stage:
                changes += 1
                regressions += STAGES.index(s) < STAGES.index(stage)
                stage, entered, furthest = s, t, max(furthest, STAGES.index(s))
            if pd.notna(new_ecd) and pd.notna(ecd) and new_ecd > ecd:
                pushes, days_pushed = pushes + 1, days_pushed + (new_ecd - ecd) / DAY
            ecd = new_ecd if pd.notna(new_ecd) else ecd
        amounts = [a for _t, _s, a, _e in path if pd.notna(a)]
        rows.append({"deal_id": d.deal_id, "stage": stage, "stage_index": STAGES.index(stage),
                     "stage_entered_at": entered, "days_in_stage": (T - entered) / DAY,
                     "furthest_stage_index": furthest, "stage_changes": changes, "stage_regressions": regressions,
                     "amount": amounts[-1] if amounts else d.amount,
                     "expected_close_date": _last_known(path), "close_date_pushes": pushes,
                     "close_date_days_pushed": days_pushed, "deal_age_days": (T - d.created_at) / DAY})
    return pd.DataFrame(rows)


def _last_known(path: list[tuple]) -> pd.Timestamp:
    known = [e for _t, _s, _a, e in path if pd.notna(e)]
    return known[-1] if known else pd.NaT


def spells_oracle(data: CanonicalData, cutoff: pd.Timestamp) -> pd.DataFrame:
    """Every stay of a deal created by `cutoff` in a stage, from its events dated <= cutoff:
    deal_id, stage, entered_at, left_at (the next stage change, else the close if it
    happened by cutoff, else NaT), dwell_days."""
    rows = []
    for d in data.deals.itertuples():
        if d.created_at > cutoff:
            continue
        path = deal_path(data, d, cutoff)
        starts = [(t, s) for i, (t, s, _a, _e) in enumerate(path) if i == 0 or s != path[i - 1][1]]
        closed = d.closed_at if pd.notna(d.closed_at) and d.closed_at <= cutoff else pd.NaT
        for i, (t, s) in enumerate(starts):
            left = starts[i + 1][0] if i + 1 < len(starts) else closed
            rows.append({"deal_id": d.deal_id, "stage": s, "entered_at": t, "left_at": left,
                         "dwell_days": (left - t) / DAY if pd.notna(left) else np.nan})
    return pd.DataFrame(rows, columns=["deal_id", "stage", "entered_at", "left_at", "dwell_days"]) \
        .astype({"dwell_days": "float64"})

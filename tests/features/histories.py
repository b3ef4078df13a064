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

"""Snapshots: who is open when, the as-of join primitive, and per-event running state."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from histories import DATA_END, STAGES, make_data, random_as_of, random_history, spells_oracle, state_oracle

from features.analytics.state import build_state
from features.arrays import event_arrays
from features.dates import as_of_timestamps
from features.errors import NotEnoughData, SchemaError
from features.schema import CanonicalData, DatasetMeta
from features.snapshots import as_of_grid, deals_at, event_state, snapshot_positions, state_at


def open_pairs(deals: pd.DataFrame, as_of) -> list[tuple]:
    """(deal_id, as_of) of every snapshot row, from `snapshot_positions`."""
    rows, at = snapshot_positions(deals, as_of_timestamps(as_of))
    return list(zip(deals["deal_id"].to_numpy()[rows], pd.DatetimeIndex(at)))


def running_state(deals: pd.DataFrame, stage_events: pd.DataFrame | None, stages: list[str]) -> pd.DataFrame:
    """`event_state` of canonical tables, as a frame."""
    created = deals["created_at"].to_numpy(dtype="datetime64[us]")
    return pd.DataFrame(event_state(created, event_arrays(deals["deal_id"], stage_events, stages), len(stages)))


@pytest.mark.parametrize("seed", range(8))
def test_snapshot_positions_match_a_brute_force_scan(seed):
    data = random_history(seed, n_deals=15)
    dates = list(pd.date_range("2024-01-01", DATA_END, freq="5D")) + list(data.deals["created_at"][:3]) \
        + list(data.deals["closed_at"].dropna()[:3])  # boundaries: created == T, closed == T
    got = open_pairs(data.deals, dates)
    expected = {(d.deal_id, T) for d in data.deals.itertuples() for T in set(dates)
                if d.created_at <= T and (pd.isna(d.closed_at) or d.closed_at > T)}
    assert set(got) == expected
    assert len(got) == len(expected)


def test_created_at_as_of_is_open_and_closed_at_as_of_is_not():
    deals = random_history(0, n_deals=1).deals.assign(
        created_at=pd.Timestamp("2024-02-01"), closed_at=pd.Timestamp("2024-03-01"), outcome="won")
    got = open_pairs(deals, ["2024-02-01", "2024-03-01"])
    assert [at for _deal, at in got] == [pd.Timestamp("2024-02-01")]


def test_as_of_grid_is_weekly_mondays_within_the_data():
    data = random_history(1, n_deals=10)
    grid = as_of_grid(data)
    assert (grid.dayofweek == 0).all() and grid.min() >= data.deals["created_at"].min().normalize()
    assert grid.max() <= data.data_end and str(grid.dtype) == "datetime64[us]"
    assert len(as_of_grid(data, freq="MS", start="2024-02-01", end="2024-04-30")) == 3


def test_as_of_grid_refuses_static_data_and_empty_ranges():
    static = CanonicalData(deals=pd.DataFrame({"deal_id": ["a"]}), meta=DatasetMeta(stages=["s"], static=True))
    with pytest.raises(NotEnoughData, match="transform_static"):
        as_of_grid(static)
    with pytest.raises(NotEnoughData, match="widen"):
        as_of_grid(random_history(1), start="2024-03-05", end="2024-03-06")


def _one_deal(events: list[tuple]) -> CanonicalData:
    deals = random_history(0, n_deals=1).deals.assign(created_at=pd.Timestamp("2024-01-01"),
                                                      closed_at=pd.NaT, outcome=None)
    frame = pd.DataFrame(events, columns=["entered_at", "stage", "amount", "expected_close_date"])
    return make_data(deals, frame.assign(deal_id=deals["deal_id"].iloc[0]), None)


def test_running_state_separates_field_updates_regressions_and_pushes():
    data = _one_deal([("2024-01-03", "qualified", 100.0, "2024-03-01"),
                      ("2024-01-05", "qualified", 150.0, "2024-03-15"),  # field update: amount, push
                      ("2024-01-08", "proposal", np.nan, None),
                      ("2024-01-10", "qualified", 150.0, "2024-03-10"),  # regression; pulled in, no push
                      ("2024-01-12", "qualified", np.nan, "2024-04-01")])  # push of 22 days
    ev = running_state(data.deals, data.stage_events, STAGES)
    assert list(ev["stage_index"]) == [0, 1, 1, 2, 1, 1]  # implied 'lead' at created_at first
    assert list(ev["stage_changes"]) == [0, 1, 1, 2, 3, 3]
    assert list(ev["stage_regressions"]) == [0, 0, 0, 0, 1, 1]
    assert list(ev["furthest_stage_index"]) == [0, 1, 1, 2, 2, 2]
    assert list(ev["stage_entered_at"].dt.day) == [1, 3, 3, 8, 10, 10]
    assert list(ev["event_amount"].fillna(-1)) == [-1, 100, 150, 150, 150, 150]
    assert list(ev["amount_changes"]) == [0, 0, 1, 1, 1, 1]
    assert list(ev["close_date_pushes"]) == [0, 0, 1, 1, 1, 2]
    assert list(ev["close_date_days_pushed"]) == [0, 0, 14, 14, 14, 36]
    state = state_at(np.zeros(2, "int64"), pd.to_datetime(["2024-01-02", "2024-01-08"]).to_numpy(), ev)
    assert list(state["stage_index"]) == [0, 2] and list(np.nan_to_num(state["event_amount"], nan=-1)) == [-1, 150]


def test_history_starting_at_creation_has_no_implied_entry():
    ev = running_state(*_args(_one_deal([("2024-01-01", "proposal", 5.0, None)])))
    assert list(ev["stage_index"]) == [2] and list(ev["stage_changes"]) == [0]


def test_unknown_stage_is_a_schema_error_with_a_fix():
    with pytest.raises(SchemaError, match="mapping's 'stages'"):
        running_state(*_args(_one_deal([("2024-01-02", "won-ish", 5.0, None)])))


def _args(data):
    return data.deals, data.stage_events, STAGES


# ---- the fast engine against the brute-force oracle (histories.py) ----------------------
def _cases(n_cases: int) -> list[tuple]:
    """(data, T) over many random histories: events on the hour (same-time events
    happen), deals without events, as-of dates at creations, closes and events."""
    out = []
    for seed in range(n_cases):
        rng = np.random.default_rng(1000 + seed)
        data = random_history(seed, n_deals=int(rng.integers(1, 14)), with_events=seed % 7 != 0,
                              event_amounts=seed % 5 != 0)
        out += [(data, random_as_of(rng, data)) for _ in range(3)]
    return out


@pytest.mark.parametrize("data,T", _cases(40))
def test_deals_at_matches_the_brute_force_oracle(data, T):
    got = deals_at(data, T).sort_values("deal_id").reset_index(drop=True)
    expected = state_oracle(data, T)
    expected = expected.sort_values("deal_id").reset_index(drop=True) if len(expected) else expected
    assert list(got["deal_id"]) == list(expected.get("deal_id", []))
    if not len(expected):
        return
    assert list(got["stage"]) == list(expected["stage"])
    for col in expected.columns.drop(["deal_id", "stage"]):
        left, right = got[col].to_numpy(), expected[col].to_numpy()
        if col.endswith("_at") or col == "expected_close_date":
            assert list(pd.to_datetime(left)) == list(pd.to_datetime(right)), col
        else:
            np.testing.assert_allclose(left.astype(float), right.astype(float), rtol=1e-12, err_msg=col)


@pytest.mark.parametrize("data,T", _cases(25))
def test_stage_spells_match_the_brute_force_oracle(data, T):
    """The one spell table, as the pipeline analytics read it at T."""
    state = build_state(data, T)
    names = state.deals.set_index("deal_id")["deal_name"]
    got = state.spells.assign(deal_id=names.reindex(state.spells["deal_id"]).to_numpy())
    expected = spells_oracle(data, T)
    assert list(zip(got["deal_id"], got["stage"], got["start"])) == \
        list(zip(expected["deal_id"], expected["stage"], expected["entered_at"]))
    assert list(pd.to_datetime(got["end"])) == list(pd.to_datetime(expected["left_at"]))
    np.testing.assert_allclose(got["dwell_days"].to_numpy(float), expected["dwell_days"].to_numpy(float))


def test_deals_at_handles_same_time_events_a_deal_created_at_t_and_no_history():
    data = _one_deal([("2024-01-03", "qualified", 100.0, None), ("2024-01-03", "proposal", 120.0, None),
                      ("2024-01-03", "qualified", np.nan, None)])  # same instant: input order decides
    got = deals_at(data, "2024-01-03").iloc[0]
    assert (got["stage"], got["stage_changes"], got["stage_regressions"], got["amount"]) == ("qualified", 3, 1, 120.0)
    assert got["furthest_stage_index"] == 2 and got["stage_entered_at"] == pd.Timestamp("2024-01-03")
    at_creation = deals_at(data, "2024-01-01").iloc[0]
    assert (at_creation["stage"], at_creation["days_in_stage"], at_creation["deal_age_days"]) == ("lead", 0, 0)
    bare = make_data(data.deals, None, None)
    assert deals_at(bare, "2024-02-01").iloc[0]["stage"] == "lead"

"""Labels: censoring is never 'lost', horizons know how much was observed."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from histories import DATA_END, make_data, random_history

from features.build import build_training_set
from features.labels import make_labels, static_labels
from features.schema import CanonicalData, DatasetMeta

T = pd.Timestamp("2024-04-01")  # DATA_END is 2024-05-30: 59 days observed after T


def _labels_for(closed_at, outcome, as_of=T):
    deals = random_history(0, n_deals=1).deals.assign(created_at=pd.Timestamp("2024-01-01"),
                                                      closed_at=pd.Timestamp(closed_at), outcome=outcome)
    data = make_data(deals, None, None)
    snaps = pd.DataFrame({"deal_id": deals["deal_id"], "as_of": [pd.Timestamp(as_of)]})
    return make_labels(data, snaps).iloc[0]


def test_open_at_data_end_is_censored_not_lost():
    row = _labels_for(None, None)
    assert np.isnan(row["won"]) and np.isnan(row["days_to_close"]) and not row["closed_within_data"]
    assert row["won_within_30d"] == 0.0  # 59 days seen, still open: not won within 30
    assert np.isnan(row["won_within_60d"]) and np.isnan(row["won_within_90d"])  # not enough seen
    assert not row["event_observed"] and row["duration_days"] == (DATA_END - T).days


@pytest.mark.parametrize("outcome,days,expected", [
    ("won", 40, {"won": 1.0, "won_within_30d": 0.0, "won_within_60d": 1.0, "won_within_90d": 1.0}),
    ("won", 10, {"won": 1.0, "won_within_30d": 1.0, "won_within_60d": 1.0, "won_within_90d": 1.0}),
    ("lost", 10, {"won": 0.0, "won_within_30d": 0.0, "won_within_60d": 0.0, "won_within_90d": 0.0}),
])
def test_closed_deals_get_outcome_and_horizons(outcome, days, expected):
    row = _labels_for(T + pd.Timedelta(days=days), outcome)
    assert row[list(expected)].to_dict() == expected
    assert row["days_to_close"] == days and row["duration_days"] == days and row["closed_within_data"]
    assert row["event_observed"] == (outcome == "won")


def test_a_close_after_the_declared_data_end_is_censored():
    row = _labels_for(DATA_END + pd.Timedelta(days=3), "won")
    assert np.isnan(row["won"]) and not row["event_observed"]


def test_labels_align_with_snapshots_row_by_row():
    data = random_history(4, n_deals=20)
    X, y, _ = build_training_set(data, pd.date_range("2024-01-10", DATA_END, freq="7D"))
    assert list(y["deal_id"]) == list(X["deal_id"]) and list(y["as_of"]) == list(X["as_of"])
    closed = data.deals.set_index("deal_id")["closed_at"].reindex(y["deal_id"]).to_numpy()
    np.testing.assert_allclose(y["days_to_close"], (closed - y["as_of"].to_numpy()) / np.timedelta64(1, "D"))
    assert y.loc[~y["closed_within_data"], "won"].isna().all()


def test_as_of_after_the_data_end_is_refused_by_the_training_set():
    with pytest.raises(ValueError, match="after the end of the data"):
        build_training_set(random_history(1), [DATA_END + pd.Timedelta(days=1)])


def test_snapshot_of_an_unknown_deal_is_an_error():
    data = random_history(1, n_deals=2)
    with pytest.raises(ValueError, match="not in data.deals"):
        make_labels(data, pd.DataFrame({"deal_id": ["nope"], "as_of": [T]}))


def test_static_labels_come_from_the_outcome():
    deals = pd.DataFrame({"deal_id": ["a", "b", "c"], "outcome": pd.Series(["won", "lost", None], dtype="string")})
    data = CanonicalData(deals=deals, meta=DatasetMeta(stages=["lead"], static=True))
    y = static_labels(data, pd.DataFrame({"deal_id": ["c", "a", "b"], "as_of": pd.NaT}))
    assert y["won"].tolist()[1:] == [1.0, 0.0] and np.isnan(y["won"].iloc[0])
    assert y["closed_within_data"].tolist() == [False, True, True]

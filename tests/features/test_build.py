"""FeatureBuilder: serving equals batch, partial histories, static mode, encoding, pickling."""
from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from histories import DATA_END, STAGES, make_data, random_history
from sklearn.exceptions import NotFittedError

from features.build import FeatureBuilder, build_training_set, features
from features.errors import SchemaError
from features.schema import CanonicalData, DatasetMeta

DATES = pd.date_range("2024-01-08", DATA_END, freq="W-MON")


@pytest.fixture(scope="module")
def data():
    return random_history(11, n_deals=40)


@pytest.fixture(scope="module")
def builder(data):
    return FeatureBuilder().fit(data)


def one_deal(data: CanonicalData, deal_id: str) -> CanonicalData:
    """What serving builds from a payload: the deal with its own events and activities."""
    def mine(t):
        return None if t is None else t.loc[t["deal_id"] == deal_id].reset_index(drop=True)
    return CanonicalData(deals=mine(data.deals), meta=data.meta, stage_events=mine(data.stage_events),
                         activities=mine(data.activities))


def test_single_request_path_equals_the_batch_path(data, builder):
    batch = builder.transform(data, DATES)
    sample = batch.sample(25, random_state=0)
    for deal_id, T in zip(sample["deal_id"], sample["as_of"]):
        served = builder.transform(one_deal(data, deal_id), T)
        expected = batch.loc[(batch["deal_id"] == deal_id) & (batch["as_of"] == T)].reset_index(drop=True)
        pd.testing.assert_frame_equal(served, expected)


def test_serving_after_the_data_end_uses_the_latest_stored_history(data, builder):
    open_ids = data.deals.loc[data.deals["closed_at"].isna(), "deal_id"]
    now = DATA_END + pd.Timedelta(days=30)
    served = builder.transform(one_deal(data, open_ids.iloc[0]), now)
    at_end = builder.transform(data, DATA_END)
    at_end = at_end.loc[at_end["deal_id"] == open_ids.iloc[0]]
    assert served["owner_win_rate"].iloc[0] == pytest.approx(at_end["owner_win_rate"].iloc[0], rel=0.2)
    assert served["deal_age_days"].iloc[0] == at_end["deal_age_days"].iloc[0] + 30


def test_output_shape_order_and_dtypes(data, builder):
    X = builder.transform(data, DATES)
    assert list(X.columns) == ["deal_id", "as_of"] + builder.feature_names_
    assert X["as_of"].is_monotonic_increasing and str(X["as_of"].dtype) == "datetime64[us]"
    for name in builder.feature_names_:
        kind = X[name].dtype
        if name in builder.categorical_features_:
            assert isinstance(kind, pd.CategoricalDtype)
            assert list(kind.categories) == list(builder.categories_[name])
        else:
            assert kind == "float64", name
    assert list(X["stage"].cat.categories) == STAGES
    assert set(builder.categorical_features_) == {"stage", "owner", "source", "segment", "industry"}
    assert "account_id" not in X and "account_win_rate" in X and "employees" in X


def test_unseen_category_levels_become_missing_not_errors(data, builder):
    deal = one_deal(data, data.deals["deal_id"].iloc[0])
    deal.deals = deal.deals.assign(owner="someone new", industry="mining", account_id="acc-new")
    row = builder.transform(deal, deal.deals["created_at"].iloc[0])
    assert row["owner"].isna().all() and row["industry"].isna().all()
    assert np.isnan(row["owner_closed_deals"]).all() and np.isnan(row["owner_open_deals"]).all()
    # no history for this owner: the smoothed rate is the global prior
    np.testing.assert_array_equal(row["owner_win_rate"], row["global_win_rate"])


def test_no_stage_events_means_first_stage_since_creation():
    data = random_history(5, n_deals=20, with_events=False)
    X = FeatureBuilder().fit(data).transform(data, DATES)
    assert (X["stage"] == STAGES[0]).all() and (X["stage_changes"] == 0).all()
    np.testing.assert_array_equal(X["days_in_stage"], X["deal_age_days"])
    final = data.deals.set_index("deal_id")["amount"].reindex(X["deal_id"]).to_numpy()
    np.testing.assert_array_equal(X["amount"], final)  # the only amount known
    assert X["days_to_expected_close"].isna().all() and (X["close_date_pushes"] == 0).all()


def test_no_activities_table_means_missing_not_zero():
    data = random_history(5, n_deals=20, with_activities=False)
    X = FeatureBuilder().fit(data).transform(data, DATES)
    cols = ["activities_7d", "activities_30d", "activities_90d", "days_since_last_activity", "activity_trend"]
    assert X[cols].isna().all().all()
    empty = make_data(data.deals, data.stage_events, pd.DataFrame(columns=["deal_id", "occurred_at", "type"]))
    X0 = FeatureBuilder().fit(empty).transform(empty, DATES)
    assert (X0["activities_30d"] == 0).all() and X0["days_since_last_activity"].isna().all()


def test_amount_is_the_latest_known_event_amount(data, builder):
    X = builder.transform(data, DATES)
    events = data.stage_events.dropna(subset=["amount"])
    for row in X.sample(30, random_state=1).itertuples():
        known = events.loc[(events["deal_id"] == row.deal_id) & (events["entered_at"] <= row.as_of), "amount"]
        if (events["deal_id"] == row.deal_id).any():
            assert (np.isnan(row.amount) and known.empty) or row.amount == known.iloc[-1]


def test_calendar_features_on_known_dates(builder, data):
    deal = one_deal(data, data.deals["deal_id"].iloc[0])
    deal.deals = deal.deals.assign(created_at=pd.Timestamp("2024-01-01"), closed_at=pd.NaT)
    deal.stage_events = deal.activities = None
    X = builder.transform(deal, ["2024-02-10", "2024-03-31 12:00", "2024-12-01"])
    assert X["days_to_month_end"].tolist() == [19, 0, 30]
    assert X["days_to_quarter_end"].tolist() == [50, 0, 30]
    assert X["month_of_quarter"].tolist() == [2, 3, 3] and X["quarter_end_month"].tolist() == [0, 1, 1]


def test_pickled_builder_gives_identical_features(data, builder):
    again = pickle.loads(pickle.dumps(builder))
    pd.testing.assert_frame_equal(again.transform(data, DATES[:6]), builder.transform(data, DATES[:6]))


def test_describe_gives_words_for_every_feature(builder):
    labels = {n: builder.describe(n) for n in builder.feature_names_}
    assert labels["days_in_stage"] == "days in current stage"
    assert labels["owner_win_rate"] == "owner historical win rate"
    assert labels["activities_30d"] == "activities in the last 30 days"
    assert all(isinstance(v, str) and v for v in labels.values())


def test_misuse_gets_clear_errors(data):
    with pytest.raises(NotFittedError, match="fit"):
        FeatureBuilder().transform(data, DATES)
    with pytest.raises(SchemaError, match="created_at"):
        FeatureBuilder().fit(data).transform(CanonicalData(data.deals.drop(columns="created_at"), data.meta), DATES)
    with pytest.raises(ValueError, match="activity_windows"):
        FeatureBuilder(activity_windows=(30,)).fit(data)


def test_static_mode_one_row_per_lead_with_attributes_only():
    deals = pd.DataFrame({"deal_id": ["a", "b", "c"], "source": pd.Series(["web", "ads", None], dtype="string"),
                          "outcome": pd.Series(["won", "lost", "lost"], dtype="string"),
                          "visits": [3.0, np.nan, 1.0], "country": pd.Series(["fr", "de", "fr"], dtype="string")})
    data = CanonicalData(deals=deals, meta=DatasetMeta(stages=["lead"], static=True,
                                                       attributes={"visits": "numeric", "country": "categorical"}))
    X, y, builder = build_training_set(data)
    assert builder.feature_names_ == ["source", "visits", "country"]
    assert list(X.columns) == ["deal_id", "as_of", "source", "visits", "country"] and X["as_of"].isna().all()
    assert y["won"].tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="transform_static"):
        builder.transform(data, ["2024-01-01"])


def test_features_are_feature_rows_with_their_labels():
    table = features(random_history(2, n_deals=15), ["2024-02-01", "2024-03-01"])
    assert len(table) > 0 and {"owner_win_rate", "won", "won_within_90d"} <= set(table.columns)
    assert set(table["as_of"]) == {pd.Timestamp("2024-02-01"), pd.Timestamp("2024-03-01")}


def test_runs_on_the_synthetic_generator():
    synthetic = pytest.importorskip("features.synthetic")
    data, _truth = synthetic.generate_data(600, seed=1)
    X, y, builder = build_training_set(data)
    assert len(X) == len(y) > 1000
    assert X[builder.feature_names_].notna().any().all()  # every feature is informative somewhere
    assert y["won"].isna().sum() == (~y["closed_within_data"]).sum()


def test_transform_rows_equals_transform_for_the_same_pairs(data, builder):
    batch = builder.transform(data, DATES).sample(30, random_state=2)
    got = builder.transform_rows(data, batch[["deal_id", "as_of"]])
    key = ["as_of", "deal_id"]
    pd.testing.assert_frame_equal(got.sort_values(key).reset_index(drop=True),
                                  batch.sort_values(key).reset_index(drop=True))
    closed = data.deals.dropna(subset=["closed_at"]).iloc[:1]
    with pytest.raises(ValueError, match="not open"):
        builder.transform_rows(data, pd.DataFrame({"deal_id": closed["deal_id"], "as_of": closed["closed_at"]}))

"""The new-deal model on hand-built histories: creation rate and trend, cohort win curve,
expected wins in a window, values by segment, the scaled copy, scikit-learn conventions."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

from features.errors import NotEnoughData
from training.forecast.bookings import BookingRule
from training.forecast.newdeals import ALL, NewDealModel

T = pd.Timestamp("2024-06-01")
DAY = pd.Timedelta(days=1)


def history(ages_days: np.ndarray, won: np.ndarray, cycle_days: float = 10.0, **columns) -> SimpleNamespace:
    """Deals created `ages_days` before T; the `won` ones close won `cycle_days` after
    creation, the others close lost 5 days after it (closes after T are still open)."""
    created = T - pd.to_timedelta(ages_days, unit="D")
    closed = created + pd.to_timedelta(np.where(won, cycle_days, 5.0), unit="D")
    deals = pd.DataFrame({"deal_id": [f"d{i}" for i in range(len(ages_days))], "created_at": created,
                          "closed_at": closed, "outcome": np.where(won, "won", "lost"),
                          "amount": columns.pop("amount", np.full(len(ages_days), 100.0)), **columns})
    return SimpleNamespace(deals=deals)


def one_a_day(days: int = 400) -> SimpleNamespace:
    """One deal created every day (at noon) for `days` days; every other one is won after 10 days."""
    ages = np.arange(days) + 0.5
    return history(ages, np.arange(days) % 2 == 0)


def test_creation_rate_is_the_recent_daily_count():
    model = NewDealModel().fit(one_a_day(), T)
    assert model.rate_per_day_ == {ALL: pytest.approx(1.0)} and model.trend_ == pytest.approx(1.0)
    np.testing.assert_allclose(model.creation_rate(np.array([0.0, 30.0, 365.0])), [[1.0, 1.0, 1.0]])


def test_trend_is_clipped_and_applied_log_linearly_from_the_window_middle():
    ages = np.concatenate([np.arange(0, 90, 0.5) + 0.25, np.arange(90, 200) + 0.5])  # 2 a day, then 1 a day before
    model = NewDealModel().fit(history(ages, np.zeros(len(ages), bool)), T)
    assert model.rate_per_day_[ALL] == pytest.approx(2.0)
    assert model.trend_ == 1.25  # 180 / 90 = 2, clipped to trend_clip (0.8, 1.25)
    # window middle = 45 days before T: no trend there, one window (90 days) later x 1.25, capped at 2 windows
    np.testing.assert_allclose(model.creation_rate(np.array([-45.0, 45.0, 1000.0])), [[2.0, 2.5, 2.0 * 1.25 ** 2]])


def test_cohort_win_curve_is_the_share_won_within_t_days():
    model = NewDealModel().fit(one_a_day(), T)
    curve = model.cohort_[0]
    assert curve[9] == 0.0  # every win takes 10 days
    assert curve[10] == pytest.approx(0.5) and curve[200] == pytest.approx(0.5)
    assert (np.diff(curve) >= 0).all()


def test_expected_wins_in_a_window_by_hand():
    model = NewDealModel().fit(one_a_day(), T)
    # deals created at c = 0.5, 1.5, ... days after T are won at c + 10 with probability 0.5;
    # within 30 days: ages 10.5 .. 29.5 at the window end count 0.5 each (20 days), age 9.5 half of it
    # (linear interpolation of the daily curve), younger ones nothing
    got = model.expected_wins(pd.DatetimeIndex([T]), pd.DatetimeIndex([T + 30 * DAY]))
    assert got.shape == (1, 1) and got[0, 0] == pytest.approx(1.0 * (20 * 0.5 + 0.25))
    later = model.expected_wins(pd.DatetimeIndex([T + 30 * DAY]), pd.DatetimeIndex([T + 60 * DAY]))
    assert later[0, 0] == pytest.approx(15.0)  # 30 days of creations x 0.5 (the ones created before T+20 and after)


def segmented() -> SimpleNamespace:
    n = 400
    ages = np.arange(n) + 0.5
    segment = np.where(np.arange(n) % 4 < 2, "smb", "ent")
    amount = np.where(segment == "smb", 100.0, 1_000.0)
    amount[4] = np.nan  # a won ent deal without an amount
    region = np.where(np.arange(n) % 3 == 0, "EU", "NA")
    return history(ages, np.arange(n) % 2 == 0, segment=segment, region=region, amount=amount)


def test_values_by_segment_and_group():
    model = NewDealModel(group_column="region", min_pool=10).fit(segmented(), T)
    assert model.segments_ == ["ent", "smb"]
    assert model.mean_value("smb") == pytest.approx(100.0)
    assert model.value_by_group("smb").sum() == pytest.approx(model.mean_value("smb"))
    assert set(model.value_by_group("ent").index) == {"EU", "NA"}
    # the won ent deal without an amount books the median won amount known at T (of 100s and 1000s)
    known = segmented().deals
    won = known.loc[(known["outcome"] == "won") & (known["closed_at"] <= T), "amount"].dropna()
    assert model.pool_["value"].isna().sum() == 0
    assert float(won.median()) in set(model.pool_["value"])


def test_a_given_booking_rule_counts_deals():
    model = NewDealModel().fit(segmented(), T, rule=BookingRule(1.0, counts_deals=True))
    assert model.counts_deals_ and set(model.pool_["value"]) == {1.0}


def test_scaled_is_a_copy_and_leaves_the_fitted_model_unchanged():
    model = NewDealModel(min_pool=10).fit(segmented(), T)
    before = model.pool_.copy(), {s: model.mean_value(s) for s in model.segments_}
    twice = model.scaled(2.0)
    assert twice is not model
    for s in model.segments_:
        assert twice.mean_value(s) == pytest.approx(2 * before[1][s])
        assert model.mean_value(s) == before[1][s]
    pd.testing.assert_frame_equal(model.pool_, before[0])
    assert twice.value_per_lead() == pytest.approx(2 * model.value_per_lead())


def test_scikit_learn_conventions():
    model = NewDealModel(pool_days=90)
    assert model.get_params()["pool_days"] == 90
    with pytest.raises(NotFittedError):
        model.describe()
    assert model.fit(one_a_day(), T) is model


def test_too_little_history_is_a_clear_error():
    short = history(np.arange(10) + 0.5, np.zeros(10, bool))
    model = NewDealModel()
    with pytest.raises(NotEnoughData, match="days of deal creations"):
        model.fit(short, T)
    assert not hasattr(model, "history_days_")


def test_window_weights_favour_the_quick_wins_of_a_near_window():
    """Wins of cycle 10 days (value 100) and 60 days (value 1,000): a deal created in [T, T+30)
    and won in it took less than 30 days, so a 30-day window books only the quick ones; in
    [30, 90) days a cycle-10 win stands for 60 creation days (c in [20, 80)), a cycle-60
    win for 30 (c in [0, 30)); without a window the pool's plain mean."""
    ages = np.arange(400) + 0.5
    quick = np.arange(400) % 2 == 0
    deals = history(ages, np.ones(400, bool), amount=np.where(quick, 100.0, 1_000.0)).deals
    deals["closed_at"] = deals["created_at"] + pd.to_timedelta(np.where(quick, 10.0, 60.0), unit="D")
    model = NewDealModel(min_pool=10).fit(SimpleNamespace(deals=deals), T)
    assert model.mean_value(ALL, (0.0, 30.0)) == pytest.approx(100.0)
    assert model.mean_value(ALL, (30.0, 90.0)) == pytest.approx((60 * 100.0 + 30 * 1_000.0) / 90)
    assert model.mean_value(ALL) == pytest.approx(550.0)
    assert model.value_by_group(ALL, (30.0, 90.0)).sum() == pytest.approx(model.mean_value(ALL, (30.0, 90.0)))
    assert model.windows(pd.DatetimeIndex([T - DAY, T + 30 * DAY]), pd.DatetimeIndex([T + 30 * DAY, T + 90 * DAY])) \
        == [(0.0, 30.0), (30.0, 90.0)]


def test_a_year_of_history_brings_the_season_of_the_year_before():
    """One deal a day for 500 days, won 10 days after creation, except that the deals created
    from 52 weeks before T onwards for 30 days were all won (the season: three times the
    win share in that window a year ago). Growth: the last 90 days / the same 90 days a
    year earlier = 1. The 30 days after T expect the year-earlier wins of that window
    (shrunk with 50 pseudo-wins toward the rate x cohort estimate); with `seasonal=False`,
    or less than a year and a window of history, the rate x cohort estimate alone."""
    days = 500
    ages = np.arange(days) + 0.5
    won = (np.arange(days) % 2 == 0) | ((ages < 364) & (ages > 334))
    data = history(ages, won)
    window = pd.DatetimeIndex([T]), pd.DatetimeIndex([T + 30 * DAY])
    blind = NewDealModel(seasonal=False).fit(data, T)
    plain = blind.expected_wins(*window)[0, 0]
    model = NewDealModel().fit(data, T)
    assert model.season_["growth"] == pytest.approx(1.0)
    year_before = 20.0  # created in the 30 days from T - 364, won 10 days later, inside the first 30 days
    assert model.expected_wins(*window)[0, 0] == pytest.approx(plain * (year_before + 50) / (plain + 50))
    assert model.describe()["seasonal"]["year_over_year_growth"] == pytest.approx(1.0)
    assert blind.describe()["seasonal"] is None
    assert NewDealModel().fit(one_a_day(400), T).season_ is None  # 400 days < 52 weeks + 90 days

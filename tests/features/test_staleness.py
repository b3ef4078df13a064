"""Stale deals learned from the data (`features.staleness`) and the mapping's
`lost_after_days` outcome policy (global and per stage), with its one-line errors."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.analytics import pipeline_metrics
from features.dataset import read_dataset
from features.errors import MappingError
from features.mapping import load_mapping
from features.schema import CanonicalData, DatasetMeta
from features.sources import ingest
from features.staleness import MIN_BAND, MIN_WON, fit_age_shift, fit_stale_rule, give_up_age, lost_at_cutoff, win_curve
from tests.features.test_mapping_star import star_mapping, write_export

END = pd.Timestamp("2024-12-31")


def history(n_won: int = 20, won_days: int = 100, lost_days: int = 30, zombies: int = 5) -> CanonicalData:
    """Won deals take 1..won_days days, losses are marked within lost_days, and zombies
    have been open for two years: among closed old deals, every one was won."""
    start = pd.Timestamp("2024-01-01")
    won_age = np.linspace(1, won_days, n_won)
    rows = [(f"W{i}", start, start + pd.Timedelta(days=float(a)), "won") for i, a in enumerate(won_age)]
    rows += [(f"L{i}", start, start + pd.Timedelta(days=lost_days * (i + 1) / n_won), "lost") for i in range(n_won)]
    rows += [(f"Z{i}", END - pd.Timedelta(days=730), pd.NaT, None) for i in range(zombies)]
    rows += [("young", END - pd.Timedelta(days=10), pd.NaT, None)]
    deals = pd.DataFrame(rows, columns=["deal_id", "created_at", "closed_at", "outcome"])
    deals = deals.assign(outcome=deals["outcome"].astype("string"), amount=1000.0)
    return CanonicalData(deals=deals, meta=DatasetMeta(stages=["lead", "proposal"], data_end=END))


def test_rule_is_the_longest_win_and_flags_older_open_deals_with_a_reason():
    rule = fit_stale_rule(history())
    assert rule.max_won_age_days == pytest.approx(100.0)
    stale, reason = rule.flag([730.4, 99.0, 100.0, 101.0])
    assert stale.tolist() == [True, False, False, True]
    assert reason[0] == "open 730 days; no won deal took longer than 100 days"
    assert reason[1] is None


def test_rule_is_point_in_time_and_needs_enough_wins():
    data = history()
    early = fit_stale_rule(data, "2024-03-01")  # wins after this date are unknown then
    assert early.max_won_age_days < 60
    assert fit_stale_rule(history(n_won=MIN_WON - 1)).max_won_age_days is None
    stale, reason = fit_stale_rule(history(n_won=MIN_WON - 1)).flag([10_000.0])
    assert not stale.any() and reason[0] is None


def test_win_curve_falls_to_zero_beyond_the_longest_win():
    data = history()
    curve = win_curve(data.deals, END, ages=(0, 50, 101, 500))
    assert curve[0] == pytest.approx(20 / 45, abs=0.01)  # 20 wins of 46 deals, one censored young
    assert curve[50] > curve[0]  # losses are marked early: a deal open at 50 days is more likely won
    assert curve[101] == 0.0 and curve[500] == 0.0


def test_give_up_age_is_where_open_deals_stop_winning():
    assert give_up_age(history().deals, END) == pytest.approx(100.0)  # few zombies: the longest win
    # 200 zombies: from about 80 days, fewer than 2 % of the deals still open went on to win
    assert 60 < give_up_age(history(zombies=200).deals, END) < 100
    assert give_up_age(history(n_won=MIN_WON - 1).deals, END) is None


def test_deals_past_the_give_up_age_are_stale_with_their_reason():
    """With many zombies the give-up age comes before the longest win: a deal open between
    the two is stale too (the labels count it lost), with the curve's reason."""
    rule = fit_stale_rule(history(zombies=200))
    limit = rule.give_up_age_days
    assert limit == give_up_age(history(zombies=200).deals, END) and 60 < limit < 100
    stale, reason = rule.flag([limit - 1, limit + 1, 101.0])
    assert stale.tolist() == [False, True, True]
    assert reason[1] == f"open {limit + 1:.0f} days; fewer than 2% of the deals still open at {limit:.0f} days went on to win"
    assert reason[2] == "open 101 days; no won deal took longer than 100 days"
    assert fit_stale_rule(history()).give_up_age_days == pytest.approx(100.0)  # few zombies: the longest win


def test_the_cap_keeps_deals_older_than_every_win_low():
    rule = fit_stale_rule(history(zombies=200))
    assert 0 <= rule.p_win_beyond < 0.02
    capped = rule.cap(np.array([0.7, 0.7]), [730.0, 50.0])
    assert capped[0] == rule.p_win_beyond and capped[1] == 0.7


def open_book(n_open: int = 400) -> tuple[CanonicalData, np.ndarray]:
    """`history` with many zombies and `n_open` deals open at END at ages spread over 0-300
    days: (data, their ages)."""
    data = history(n_won=200, zombies=0)
    ages = np.linspace(0.5, 300.5, n_open)
    open_ = pd.DataFrame({"deal_id": [f"O{i}" for i in range(n_open)], "created_at": END - pd.to_timedelta(ages, "D"),
                          "closed_at": pd.NaT, "outcome": pd.Series([None] * n_open, dtype="string"), "amount": 1000.0})
    deals = pd.concat([data.deals, open_], ignore_index=True)
    return CanonicalData(deals=deals, meta=data.meta), ages


def test_age_shift_gives_each_age_band_the_curves_mean_and_keeps_the_ranking():
    """A model that says 0.7 (or 0.8 for half of the deals) whatever the age: the served
    P(won) of each band of open deals averages the learned curve over them, young deals
    keep a P(won) that ranks like the model's, and deals older than every win get ~0."""
    data, ages = open_book()
    p = np.where(np.arange(len(ages)) % 2 == 0, 0.8, 0.7)
    rule = fit_age_shift(fit_stale_rule(data), data.deals, ages, p)
    assert len(rule.shift_ages) == len(ages) // MIN_BAND
    served = rule.calibrate(p, ages)
    curve = win_curve(data.deals, END, ages=np.floor(ages).astype(int))
    target = np.array([curve[int(a)] or 0.0 for a in np.floor(ages)])
    young = ages < 40
    assert served[young].mean() == pytest.approx(target[young].mean(), abs=0.03)
    assert served[young].mean() < 0.6  # the model's 0.75 was too high for deals still open
    assert (served[young & (p == 0.8)].mean() > served[young & (p == 0.7)].mean())
    assert served[ages > 120].max() < 1e-3  # nothing older than the longest win (100 days) wins
    assert rule.to_dict()["age_shift"]["log_odds_shift"] == list(rule.shifts)


def test_age_shift_needs_enough_open_deals():
    data, ages = open_book(2 * MIN_BAND - 1)
    rule = fit_stale_rule(data)
    assert fit_age_shift(rule, data.deals, ages, np.full(len(ages), 0.7)) == rule
    assert rule.calibrate(np.array([0.7, 0.7]), [10.0, 50.0]).tolist() == [0.7, 0.7]


def test_per_stage_flag_uses_the_stage_limit():
    rule = fit_stale_rule(history())
    rule = type(rule)(rule.as_of, rule.won_deals, rule.max_won_age_days, {"lead": 20.0})
    stale, reason = rule.flag([50.0, 50.0, 50.0], [30.0, 10.0, 30.0], ["lead", "lead", "proposal"])
    assert stale.tolist() == [True, False, False]
    assert reason[0] == "30 days in lead; no won deal stayed longer than 20 days there"


def test_open_deals_older_than_every_win_count_as_lost_at_the_cutoff():
    data = history()
    ids = pd.Series(["Z0", "young", "W3", "L1"])
    assert lost_at_cutoff(data.deals, ids, END).tolist() == [True, False, False, False]
    # at a cutoff before the zombies were old enough, they are still censored
    assert not lost_at_cutoff(data.deals, ids, END - pd.Timedelta(days=650)).any()


def test_pipeline_metrics_report_the_stale_pipeline():
    out = pipeline_metrics(history(), END)["total"]
    assert out["stale"]["count"] == 5 and out["stale"]["amount"] == 5000.0
    assert out["stale"]["open_deals"] == 6
    assert out["stale"]["deals"][0]["reason"].startswith("open 730 days")
    assert out["coverage"]["includes_stale_deals"] and out["coverage"]["stale_pipeline_in_period"] == 5000.0
    assert out["velocity"]["includes_stale_deals"]


# ---------------------------------------------------------------------------- lost_after_days

def ingested(tmp_path, **outcome) -> pd.DataFrame:
    rule = {"from": "stage", "close_date_is_expected_while_open": True, **outcome}
    path = write_export(tmp_path / "e", mapping=star_mapping(tmp_path / "e", **{"tables.deals.outcome": rule}))
    report = ingest(path, tmp_path / "out")
    assert report.rejects.empty
    return read_dataset(tmp_path / "out").deals.set_index("deal_id")


def test_lost_after_days_marks_old_open_deals_lost_at_that_age(tmp_path):
    deals = ingested(tmp_path, lost_after_days=40)  # exported 2024-03-01
    assert deals.loc["O3", "outcome"] == "lost" and deals.loc["O3", "closed_at"] == pd.Timestamp("2024-02-19")
    assert deals.loc["O4", "outcome"] == "lost" and deals.loc["O4", "closed_at"] == pd.Timestamp("2024-02-24")
    assert pd.isna(deals.loc["O5", "outcome"])  # 29 days old
    assert deals.loc["O1", "outcome"] == "won"  # closed deals keep their outcome


def test_lost_after_days_per_stage(tmp_path):
    deals = ingested(tmp_path, lost_after_days={"Prospecting": 40})
    assert deals.loc["O4", "outcome"] == "lost"
    assert pd.isna(deals.loc["O3", "outcome"])  # Negotiation has no limit


@pytest.mark.parametrize("days, message", [
    (0, "lost_after_days: Value error, must be a whole number of days > 0"),
    ("ten", "lost_after_days: Value error, must be a whole number of days > 0"),
    ({"Prospecting": -1}, "lost_after_days: Value error, must be a whole number of days > 0"),
    ({"Nope": 10}, "tables.deals.outcome.lost_after_days: ['Nope'] not in stages.order"),
])
def test_bad_lost_after_days_is_one_line(tmp_path, days, message):
    rule = {"from": "stage", "close_date_is_expected_while_open": True, "lost_after_days": days}
    path = write_export(tmp_path / "e", mapping=star_mapping(tmp_path / "e", **{"tables.deals.outcome": rule}))
    with pytest.raises(MappingError) as err:
        load_mapping(path)
    assert message in str(err.value) and "\n" not in str(err.value)

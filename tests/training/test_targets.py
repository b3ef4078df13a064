"""Targets and landings: a hand-checked small case, company and per-group targets on data,
landing = closed so far + the rest, P(hit target) by brute force, bad files before simulation."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from features.errors import LeadscoreError
from training.forecast.config import ForecastConfig
from training.forecast.newdeals import ALL
from training.forecast.outlook import outlook
from training.forecast.report import forecast_dict
from training.forecast.simulation import Simulation
from training.forecast.targets import checked_targets, target_report

AS_OF = pd.Timestamp("2024-06-10")
FAST = ForecastConfig(n_sims=400, seed=3)


def _hand_forecast() -> SimpleNamespace:
    """Two regions, four simulations, one period in progress (June from the 10th)."""
    periods = pd.DataFrame({"period": ["2024-06"], "start": [AS_OF], "end": [pd.Timestamp("2024-07-01")],
                            "partial": [True]})
    deals = pd.DataFrame({"group": ["a", "a", "b"], "amount": [100.0, 50.0, 200.0],
                          "close_probability": [0.5, 0.5, 0.5], "exp_0": [50.0, 25.0, 100.0],
                          "days_to_expected_close": [5.0, 40.0, np.nan],
                          "log_close_days_p50": [0.0, 0.0, np.log1p(10.0)]})
    sims = Simulation(groups=["a", "b"],
                      open=np.array([[0, 0], [100, 200], [50, 200], [150, 0]], float)[:, :, None],
                      new=np.array([[10, 0], [0, 0], [0, 0], [0, 100]], float)[:, :, None],
                      closed=np.array([[300.0], [100.0]]))
    table = pd.DataFrame({"period": ["2024-06"] * 3, "group": [ALL, "a", "b"], "expected": [200.0, 80.0, 120.0]})
    return SimpleNamespace(periods=periods, deals=deals, sims=sims, table=table, as_of=AS_OF, group_by="region",
                           new_deals=SimpleNamespace(value_per_lead=lambda: 10.0))


def test_hand_checked_per_group_targets_and_their_rollup():
    fc = _hand_forecast()
    targets = checked_targets(pd.DataFrame({"period": ["2024-06", "2024-06"], "region": ["a", "b"],
                                            "target": ["400", "250"]}), fc.periods, "month", "region")
    t = target_report(targets, fc).table.set_index("group")
    # landings: a = 300 + [10, 100, 50, 150]; b = 100 + [0, 200, 200, 100]; company = their sum
    assert t.loc["a", "landing_p50"] == 375.0 and t.loc["b", "landing_p50"] == 250.0
    assert t.loc[ALL, "landing_p50"] == 650.0 and t.loc[ALL, "landing_p10"] == pytest.approx(410 + 0.3 * 240)
    assert list(t["p_hit_target"]) == [0.5, 0.5, 0.75]  # a >= 400: 2 of 4; b >= 250: 2; company >= 650: 3
    assert list(t["closed_won_so_far"]) == [300.0, 100.0, 400.0]
    assert list(t["expected_landing"]) == [380.0, 220.0, 600.0]  # closed + expected; the company row adds up
    assert list(t["target"]) == [400.0, 250.0, 650.0]
    assert list(t["gap_to_target"]) == [25.0, 0.0, 0.0]
    assert list(t["leads_needed"]) == [3, 0, 0]  # ceil(25 / 10); 0 once the P50 landing meets the target
    assert list(t["open_pipeline_due"]) == [100.0, 200.0, 300.0]  # due: a's 5-day deal, b's 10-day median
    np.testing.assert_allclose(t["pipeline_coverage"], [100 / 100, 200 / 150, 300 / 250])


def test_hand_checked_company_target_over_a_group_split():
    fc = _hand_forecast()
    targets = checked_targets(pd.DataFrame({"period": ["2024-06"], "target": ["700"]}), fc.periods, "month", "region")
    row = target_report(targets, fc).table.iloc[0]
    assert row["group"] == ALL and row["closed_won_so_far"] == 400.0 and row["p_hit_target"] == 0.25
    assert row["open_pipeline_due"] == 300.0 and row["leads_needed"] == 5  # (700 - 650) / 10


def test_landing_is_closed_so_far_plus_the_rest(small_data, small_predictor):
    data = small_data[0]
    fc = outlook(small_predictor, data, AS_OF, periods=2, group_by="region", config=FAST).forecast
    deals = data.deals
    won = deals.loc[(deals["outcome"] == "won") & (deals["closed_at"] >= "2024-06-01") & (deals["closed_at"] <= AS_OF)]
    booked = won["amount"].fillna(fc.booking_rule.fallback_amount)
    table = fc.table.set_index(["period", "group"])
    assert table.loc[("2024-06", ALL), "closed_so_far"] == pytest.approx(booked.sum()) and booked.sum() > 0
    by_region = booked.groupby(won["region"].astype(str)).sum()
    for region, value in by_region.items():
        assert table.loc[("2024-06", region), "closed_so_far"] == pytest.approx(value)
    assert (table.xs("2024-07", level="period")["closed_so_far"] == 0).all()
    # closed so far is the same in every simulation: the landing's quantiles are the rest's, shifted
    for q in ("p10", "p50", "p90"):
        np.testing.assert_allclose(table[f"landing_{q}"], table["closed_so_far"] + table[q], rtol=1e-12)
    np.testing.assert_allclose(table["landing_expected"], table["closed_so_far"] + table["expected"])
    headline = forecast_dict(SimpleNamespace(forecast=fc, risk=pd.DataFrame(), targets=None))["headline"]
    assert headline["period"] == "2024-06" and headline["landing_p50"] == pytest.approx(
        table.loc[("2024-06", ALL), "landing_p50"])


def test_company_targets_with_a_group_split_match_the_ungrouped_report(small_data, small_predictor):
    data = small_data[0]
    targets = pd.DataFrame({"period": ["2024-06", "2024-07"], "target": ["1500000", "900000"]})
    split = outlook(small_predictor, data, AS_OF, periods=2, group_by="region", targets=targets, config=FAST)
    whole = outlook(small_predictor, data, AS_OF, periods=2, targets=targets, config=FAST)
    a, b = split.targets.table, whole.targets.table
    assert list(a["group"]) == [ALL, ALL] and a["closed_won_so_far"].iloc[0] > 0
    for col in ("closed_won_so_far", "open_pipeline_due", "pipeline_coverage", "expected_landing", "landing_p50"):
        np.testing.assert_allclose(a[col].astype(float), b[col].astype(float), rtol=1e-9)
    np.testing.assert_allclose(a["p_hit_target"], b["p_hit_target"], atol=1 / FAST.n_sims)


def test_per_group_targets_and_p_hit_by_brute_force(small_data, small_predictor):
    data = small_data[0]
    regions = sorted(data.deals["region"].dropna().astype(str).unique())
    targets = pd.DataFrame({"period": "2024-06", "region": regions, "target": "400000"})
    result = outlook(small_predictor, data, AS_OF, periods=2, group_by="region", targets=targets, config=FAST)
    fc, t = result.forecast, result.targets.table.set_index("group")
    sims = fc.sims
    assert set(t.index) == set(regions) | {ALL}
    for region in regions:
        g = sims.groups.index(region)
        landing = [sims.closed[g, 0] + sims.open[s, g, 0] + sims.new[s, g, 0] for s in range(FAST.n_sims)]
        hits = sum(1 for value in landing if value >= 400_000)
        assert t.loc[region, "p_hit_target"] == hits / FAST.n_sims
        assert t.loc[region, "landing_p50"] == pytest.approx(np.median(landing))
        shown = fc.table.set_index(["period", "group"]).loc[("2024-06", region)]
        assert t.loc[region, "landing_p50"] == pytest.approx(shown["landing_p50"])
    groups = t.drop(index=ALL)
    assert t.loc[ALL, "target"] == pytest.approx(groups["target"].sum())
    for col in ("closed_won_so_far", "expected_landing", "open_pipeline_due"):
        assert t.loc[ALL, col] == pytest.approx(groups[col].sum())
    short = (t["target"] - t["landing_p50"]).clip(lower=0)
    expected = np.ceil(short / result.targets.value_per_new_lead).astype(int)
    assert (t["leads_needed"] == expected).all()


@pytest.mark.parametrize("frame, group_by, message", [
    ({"period": ["2024-06"], "region": ["EU"], "target": ["1"]}, None, "pass --group-by region"),
    ({"period": ["2024-06"], "region": ["EU"], "target": ["1"]}, "segment", "does not match --group-by segment"),
    ({"period": ["2025-01"], "target": ["1"]}, None, "outside the forecast"),
    ({"period": ["2024-06"], "target": ["a lot"]}, None, "bad target value 'a lot'"),
    ({"period": ["June"], "target": ["1"]}, None, "bad period 'June'"),
    ({"period": ["2024-06"], "target": ["-5"]}, None, "negative target"),
    ({"period": ["2024-06"], "target": [""]}, None, "empty or non-finite"),
    ({"period": ["2024-06"], "region": ["Atlantis"], "target": ["1"]}, "region", "no deal has"),
    ({"period": ["2024-06"], "owner": ["x"], "region": ["EU"], "target": ["1"]}, "region", "at most one group"),
    ({"period": ["2024-06", "2024-06"], "target": ["1", "2"]}, None, "more than one target"),
    ({"period": ["2024-06"], "amount": ["1"]}, None, r"no column \['target'\]"),
    ({"month": ["2024-06"], "target": ["1"]}, None, r"no column \['period'\]"),
])
def test_bad_targets_are_one_line_errors_before_simulation(small_data, small_predictor, monkeypatch,
                                                           frame, group_by, message):
    import training.forecast.core as core

    def no_simulation(*args, **kwargs):
        raise AssertionError("simulated before the targets were checked")

    monkeypatch.setattr(core, "simulate", no_simulation)
    with pytest.raises(LeadscoreError, match=message) as err:
        outlook(small_predictor, small_data[0], AS_OF, periods=2, group_by=group_by, targets=pd.DataFrame(frame),
                config=FAST)
    assert "\n" not in str(err.value)

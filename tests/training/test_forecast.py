"""Revenue forecast: roll-ups, ranges, point in time, reproducibility, targets, risk, outputs."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from features.errors import LeadscoreError, NotEnoughData
from features.timetravel import truncate_at
from training.forecast.config import ForecastConfig
from training.forecast.core import forecast
from training.forecast.newdeals import ALL
from training.forecast.outlook import outlook
from training.forecast.periods import make_periods
from training.forecast.report import forecast_dict, forecast_table
from training.forecast.run_log import log_forecast

AS_OF = pd.Timestamp("2024-06-10")
FAST = ForecastConfig(n_sims=400, seed=3)


@pytest.fixture(scope="module")
def by_region(small_data, small_predictor):
    return outlook(small_predictor, small_data[0], AS_OF, periods=3, freq="month", group_by="region", config=FAST)


def test_periods_start_with_the_rest_of_the_current_one():
    per = make_periods("2024-06-10", 2, "quarter")
    assert list(per["period"]) == ["2024Q2", "2024Q3"]
    assert per["start"].iloc[0] == pd.Timestamp("2024-06-10") and per["partial"].iloc[0]
    assert per["end"].iloc[0] == pd.Timestamp("2024-07-01") and not per["partial"].iloc[1]
    assert not make_periods("2024-07-01", 1, "month")["partial"].iloc[0]
    with pytest.raises(LeadscoreError, match="freq"):
        make_periods("2024-07-01", 1, "week")


def test_rollups_add_up_to_the_total(by_region):
    by_region = by_region.forecast
    table = by_region.table
    groups = table.loc[table["group"] != ALL].groupby("period")[["expected", "open_pipeline", "new_deals"]].sum()
    totals = table.loc[table["group"] == ALL].set_index("period")[["expected", "open_pipeline", "new_deals"]]
    np.testing.assert_allclose(groups.loc[totals.index].to_numpy(), totals.to_numpy(), rtol=1e-9)
    assert set(table["group"]) - {ALL} == set(by_region.deals["group"])
    assert (totals["expected"] > 0).all() and (totals["new_deals"] > 0).all()
    # the open-pipeline expectation is the sum over deals of value x P(won in the period)
    assert totals["open_pipeline"].iloc[0] == pytest.approx(by_region.deals["exp_0"].sum())
    assert (table["p10"] <= table["p50"]).all() and (table["p50"] <= table["p90"]).all()


def test_quantiles_bracket_the_expectation(by_region):
    t = by_region.forecast.totals()
    assert ((t["p10"] < t["expected"]) & (t["expected"] < t["p90"])).all()


def _subset(data, share: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = data.deals["deal_id"][rng.random(len(data.deals)) < share]
    keep = lambda t: t.loc[t["deal_id"].isin(ids)].reset_index(drop=True)  # noqa: E731
    return replace(data, deals=keep(data.deals), stage_events=keep(data.stage_events),
                   activities=keep(data.activities))


def test_intervals_widen_relatively_with_fewer_deals(small_data, small_predictor):
    config = replace(FAST, shock=0.05)  # same common shock for both: only the deal count differs
    def rel_width(data):
        t = forecast(small_predictor, data, AS_OF, periods=1, config=config).totals().iloc[0]
        return (t["p90"] - t["p10"]) / t["expected"]
    assert rel_width(_subset(small_data[0], 0.2)) > 1.3 * rel_width(small_data[0])


def test_forecast_is_point_in_time(small_data, small_predictor):
    data = small_data[0]
    full = outlook(small_predictor, data, AS_OF, periods=2, config=FAST)
    later = outlook(small_predictor, truncate_at(data, AS_OF + pd.Timedelta(days=75)), AS_OF, periods=2, config=FAST)
    pd.testing.assert_frame_equal(full.forecast.table, later.forecast.table)
    pd.testing.assert_frame_equal(full.risk, later.risk)


def test_seed_reproduces_and_changes_the_draws(small_data, small_predictor):
    data = small_data[0]
    a = forecast(small_predictor, data, AS_OF, periods=1, config=FAST).table
    b = forecast(small_predictor, data, AS_OF, periods=1, config=FAST).table
    c = forecast(small_predictor, data, AS_OF, periods=1, config=replace(FAST, seed=4)).table
    pd.testing.assert_frame_equal(a, b)
    assert a["p50"].iloc[0] != c["p50"].iloc[0]
    assert a["expected"].iloc[0] == c["expected"].iloc[0]


def test_empty_pipeline_is_a_clear_message(small_data, small_predictor):
    data = small_data[0]
    deals = data.deals.copy()
    open_at = (deals["created_at"] <= AS_OF) & ~(deals["closed_at"] <= AS_OF)
    deals.loc[open_at, "closed_at"] = AS_OF - pd.Timedelta(seconds=1)
    deals.loc[open_at, "outcome"] = "lost"
    with pytest.raises(NotEnoughData, match="pipeline is empty"):
        forecast(small_predictor, replace(data, deals=deals), AS_OF, config=FAST)


@pytest.mark.parametrize("as_of, message", [("2021-01-01", "outside the data"), ("2031-01-01", "outside the data"),
                                            ("2023-01-20", "days of deal creations")])
def test_dates_without_history_are_clear_messages(small_data, small_predictor, as_of, message):
    with pytest.raises(NotEnoughData, match=message):
        forecast(small_predictor, small_data[0], as_of, config=FAST)


def test_unknown_group_column_is_a_clear_message(small_data, small_predictor):
    with pytest.raises(LeadscoreError, match="not a column"):
        forecast(small_predictor, small_data[0], AS_OF, group_by="planet", config=FAST)


def test_targets_coverage_and_gap(small_data, small_predictor):
    data = small_data[0]
    targets = pd.DataFrame({"period": ["2024-06", "2024-07"], "target": [2_000_000.0, 1_000.0]})
    fc = outlook(small_predictor, data, AS_OF, periods=2, targets=targets, config=FAST)
    t = fc.targets.table.set_index("period")
    won = data.deals.loc[(data.deals["outcome"] == "won") & (data.deals["closed_at"] >= "2024-06-01")
                         & (data.deals["closed_at"] <= AS_OF), "amount"].sum()
    assert t.loc["2024-06", "closed_won_so_far"] == pytest.approx(won)
    assert t.loc["2024-07", "closed_won_so_far"] == 0.0
    june = t.loc["2024-06"]
    assert june["remaining_gap"] == pytest.approx(2_000_000.0 - won)
    assert june["pipeline_coverage"] == pytest.approx(june["open_pipeline_due"] / june["remaining_gap"])
    assert 0 < june["weighted_pipeline_due"] < june["open_pipeline_due"]
    assert june["leads_needed"] > 0
    assert t.loc["2024-07", "remaining_gap"] == 1_000.0 and not t.loc["2024-07", "target_met"]
    assert "open pipeline amount due" in fc.targets.definitions()["pipeline_coverage"]
    assert fc.targets.value_per_new_lead == pytest.approx(fc.forecast.new_deals.value_per_lead())
    with pytest.raises(LeadscoreError, match="outside the forecast"):
        outlook(small_predictor, data, AS_OF, periods=1, targets=targets, config=FAST)


def test_risk_list_gives_reasons_that_hold(by_region, small_data):
    from features.snapshots import deals_at

    risk = by_region.risk.set_index("deal_id")
    deals = by_region.forecast.deals.set_index("deal_id").loc[risk.index]
    state = deals_at(small_data[0], AS_OF).set_index("deal_id").loc[risk.index]
    assert len(risk) > 0 and risk["reasons"].str.len().gt(0).all()
    low = risk["reasons"].str.contains("low win probability")
    assert (deals.loc[low, "close_probability"] < 0.2).all()
    assert (deals.loc[~low, "close_probability"] >= 0.2).all()
    pushed = risk["reasons"].str.contains("pushed")
    assert (state.loc[pushed, "close_date_pushes"] >= 1).all()
    assert (state.loc[~pushed, "close_date_pushes"].fillna(0) == 0).all()
    stalled = risk["reasons"].str.contains("historical P90")
    assert stalled.any()
    # the days quoted are the snapshot engine's days in stage
    quoted = risk.loc[stalled, "reasons"].str.extract(r"(\d+) days in (?!total)")[0].astype(float)
    np.testing.assert_allclose(quoted, state.loc[stalled, "days_in_stage"].round(), atol=0.5)
    assert (risk["stage"] == state["stage"]).all()


def test_outputs_are_values(by_region):
    table = forecast_table(by_region)
    assert {"period", "group", "expected", "open_pipeline", "new_deals", "p10", "p50", "p90"} <= set(table.columns)
    doc = json.loads(json.dumps(forecast_dict(by_region)))
    assert doc["value_unit"] == "amount" and "remainder of the current period" in doc["notes"][0]
    assert doc["forecast"][0]["group"] == ALL
    assert doc["ranges"]["relative_sd"] >= 0 and doc["targets"] is None
    assert len(doc["risk"]) == len(by_region.risk)


def test_fan_chart_plots_landings_and_one_period_is_a_band(small_data, small_predictor):
    from training.forecast.fan_chart import fan_points, fan_svg

    result = outlook(small_predictor, small_data[0], AS_OF, periods=1, config=FAST)
    doc = json.loads(json.dumps(forecast_dict(result)))
    points = fan_points(doc)
    landing = result.forecast.totals().iloc[0]
    assert points[-1]["p50"] == pytest.approx(landing["landing_p50"])
    assert points[-1]["p10"] < points[-1]["p90"]  # one period is a band, not a dot
    # actuals are whole periods only: June, in progress, shows its landing, never its bookings so far
    history = result.forecast.history
    assert history["so_far"].iloc[-1] and history["actual"].iloc[-1] > 0
    actual = [p["actual"] for p in points if "actual" in p]
    np.testing.assert_allclose(actual, history.loc[~history["so_far"], "actual"].tail(len(actual)))
    assert "actual" not in points[-1] and len(points) == len(actual) + 1
    assert fan_svg(doc, str).count("<rect") >= 1


def test_forecast_is_logged_to_mlflow(by_region, local_mlflow_uri):
    import mlflow

    run_id = log_forecast(forecast_dict(by_region), {"as_of": AS_OF}, ALL)
    run = mlflow.MlflowClient(local_mlflow_uri).get_run(run_id)
    assert any(k.startswith("expected_2024") for k in run.data.metrics)
    names = {a.path for a in mlflow.MlflowClient(local_mlflow_uri).list_artifacts(run_id, "plots")}
    assert "plots/forecast_fan.svg" in names
    svg = mlflow.MlflowClient(local_mlflow_uri).download_artifacts(run_id, "plots/forecast_fan.svg")
    assert open(svg).read().lstrip().startswith("<svg")

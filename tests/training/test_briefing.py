"""The finance report's data from a real forecast and a real store: the math adds up to
the forecast's own numbers, the risk list is ranked by value at risk, the previous stored
forecast is found and the deal movements between the two as-of dates are counted, and the
track record of the stored forecasts whose periods have closed is on the page."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.htmlkit import money, pct
from training.forecast.briefing import RISK_SHOWN, briefing, ranked_risk
from training.forecast.config import ForecastConfig
from training.forecast.html_report import forecast_html
from training.forecast.outlook import outlook
from training.forecast.track_record import store_forecast
from training.store.connection import open_store

FAST = ForecastConfig(n_sims=300, seed=2)
EARLIER, AS_OF = pd.Timestamp("2024-04-20"), pd.Timestamp("2024-05-20")


@pytest.fixture(scope="module")
def made(small_data, small_predictor, tmp_path_factory):
    data = small_data[0]
    store = open_store(f"sqlite:///{tmp_path_factory.mktemp('store') / 'store.db'}")
    earlier = outlook(small_predictor, data, EARLIER, periods=2, freq="quarter", config=FAST)
    now = outlook(small_predictor, data, AS_OF, periods=2, freq="quarter", config=FAST)
    store_forecast(store, earlier, "leadscore", 1, "fp")
    store_forecast(store, now, "leadscore", 2, "fp")
    yield data, now, briefing(now, data, store, "EUR"), earlier
    store.close()


def test_the_math_adds_up_to_the_forecast(made):
    _data, now, b, _earlier = made
    totals = now.forecast.totals()
    for row, (_, t) in zip(b["math"], totals.iterrows()):
        assert row["open_pipeline_value"] * row["p_won_in_period"] == pytest.approx(t["open_pipeline"])
        assert row["open_pipeline"] + row["new_deals"] + row["closed_so_far"] == pytest.approx(t["landing_expected"])
        assert row["landing_p50"] == pytest.approx(t["landing_p50"])
        # the factor each period's open pipeline was multiplied by (quarters: the one overall factor)
        assert row["open_factor"] == now.forecast.shock["open_factors"][0]
    assert b["math"][0]["open_deals"] == len(now.forecast.deals)


def test_risk_is_ranked_by_value_at_risk(made):
    _data, now, b, _earlier = made
    ranked = ranked_risk(now)
    assert len(ranked) == len(now.risk) and ranked["value_at_risk"].is_monotonic_decreasing
    assert [r["deal_id"] for r in b["risk_ranked"]] == ranked["deal_id"].head(RISK_SHOWN).tolist()
    assert len(ranked) > 25 and len(b["risk_ranked"]) == 25  # the page shows the top 25, the CSV every deal
    assert b["risk_total"]["value_at_risk"] == pytest.approx(ranked["expected_in_period"].sum())


def test_changes_compare_with_the_previous_stored_forecast(made):
    data, now, b, _earlier = made
    c = b["changes"]
    assert pd.Timestamp(c["previous_as_of"]) == EARLIER and c["period"] == "2024Q2"
    closed = data.deals["closed_at"]
    won = (data.deals["outcome"] == "won") & (closed > EARLIER) & (closed <= AS_OF)
    assert c["deals"]["won"]["count"] == int(won.sum())
    assert c["deals"]["won"]["value"] == pytest.approx(float(np.nansum(data.deals.loc[won, "amount"])))
    g = c["groups"][0]
    # what was won in between moved from the pipeline into closed so far
    assert g["now_closed_so_far"] - g["previous_closed_so_far"] == pytest.approx(c["deals"]["won"]["value"])
    html = forecast_html(b)
    assert f"as of {EARLIER.date()}" in html and "What changed since the previous forecast" in html


def test_the_report_carries_the_track_record_of_the_closed_periods(made):
    data, _now, b, earlier = made
    # the data runs past 2024Q2: the first forecast stored for it (made on EARLIER, inside the quarter) against
    # its bookings, counted by hand (every won deal books its amount, an unknown amount the median won amount)
    deals = data.deals
    won = deals[deals["outcome"] == "won"]
    value = won["amount"].fillna(won["amount"].median())
    booked = float(value[(won["closed_at"] >= "2024-04-01") & (won["closed_at"] < "2024-07-01")].sum())
    forecast_then = earlier.forecast.totals().set_index("period").loc["2024Q2"]
    record = b["track_record"]
    q2 = [p for p in record["periods"] if p["period_start"][:10] == "2024-04-01" and p["horizon"] == 0]
    assert len(q2) == 1 and q2[0]["as_of"][:10] == str(EARLIER.date())
    assert q2[0]["landing_p50"] == pytest.approx(forecast_then["landing_p50"])
    assert q2[0]["booked"] == pytest.approx(booked) and booked > 0
    h0 = [r for r in record["by_horizon"] if r["horizon"] == 0 and r["group_value"] == "(all)"]
    assert len(h0) == 1 and h0[0]["periods"] == 1
    assert h0[0]["wape"] == pytest.approx(abs(forecast_then["landing_p50"] - booked) / booked)
    html = forecast_html(b)
    track = html[html.index("Track record"):]
    assert f"<td>{pct(h0[0]['wape'], 1)}</td>" in track and f"<td>{money(booked, 'EUR')}</td>" in track

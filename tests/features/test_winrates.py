"""Named win rates: each says what it is, and each report says which one it shows."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from histories import STAGES, random_history

from features import winrates
from features.analytics import pipeline_metrics
from features.report import render_html

RATES = [winrates.closed_win_rate, winrates.laplace_win_rate, winrates.smoothed_group_rate,
         winrates.stage_reach_win_rate, winrates.won_within_rate]


@pytest.mark.parametrize("rate", RATES, ids=lambda f: f.__name__)
def test_every_rate_states_its_definition(rate):
    text = winrates.definition(rate)
    assert len(text) > 30 and "`" not in text


def test_rates_on_small_counts():
    assert winrates.closed_win_rate(3, 1) == 0.75
    won, lost = np.array([True, False, True]), np.array([False, True, False])
    assert winrates.closed_win_rate(won, lost) == pytest.approx(2 / 3)
    assert winrates.closed_win_rate(0, 0) is None
    assert winrates.laplace_win_rate(np.array(0.0), np.array(0.0)) == 0.5
    assert winrates.smoothed_group_rate(np.array(0.0), np.array(0.0), np.array(0.3), 20.0) == pytest.approx(0.3)
    assert winrates.smoothed_group_rate(np.array(8.0), np.array(2.0), np.array(0.5), 10.0) == pytest.approx(13 / 20)
    assert winrates.won_within_rate(pd.Series([10.0, 40.0, np.nan, np.nan]), 30) == 0.25


@pytest.mark.parametrize("seed", range(5))
def test_stage_reach_win_rate_matches_a_per_stage_count(seed):
    data = random_history(seed, n_deals=30)
    d, ev = data.deals, data.stage_events
    reached = pd.concat([ev[["deal_id", "stage"]], pd.DataFrame({"deal_id": d["deal_id"], "stage": STAGES[0]})])
    closed = d.loc[d["outcome"].notna(), ["deal_id", "outcome"]]
    got = winrates.stage_reach_win_rate(reached, closed)
    for stage in STAGES:
        ids = set(reached.loc[reached["stage"] == stage, "deal_id"]) & set(closed["deal_id"])
        if not ids:
            assert stage not in got.index
            continue
        won = sum(closed.set_index("deal_id").loc[i, "outcome"] == "won" for i in ids)
        assert got[stage] == pytest.approx(won / len(ids))


def test_pipeline_metrics_and_report_say_which_win_rate_they_show():
    data = random_history(0, n_deals=30)
    m = pipeline_metrics(data, None)
    closed = winrates.definition(winrates.closed_win_rate)
    assert m["definitions"]["funnel.win_rate"].startswith(closed)
    velocity = m["definitions"]["velocity.win_rate"]
    assert velocity.startswith(closed) and "365 days" in velocity
    assert m["definitions"]["cohorts.win_rate_<N>d"] == winrates.definition(winrates.won_within_rate)
    html = render_html(m)
    assert html.count("Win rate: won / (won + lost)") >= 2 and "Share won: Share of the cohort" in html

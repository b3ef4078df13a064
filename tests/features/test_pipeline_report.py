"""The pipeline report reads right: the bottleneck's change with its sign and word, the
won bar green, captions in words, thousands separators, currency, counts when no amount
is known. Hand-built metric blocks where a rule is about one block; a small generated
history for the whole page."""
from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from features.analytics import pipeline_metrics
from features.htmlkit import PALETTE
from features.report import (
    STEP_COLOURS,
    bottleneck_sentence,
    count_waterfall_steps,
    has_amounts,
    render_html,
    waterfall_steps,
)

BOTTLENECK = {"recent_window_days": 90, "prior_window_days": 365, "stage": "proposal", "metric": "conversion",
              "recent": 0.02, "prior": 0.18, "change": 0.889, "worse_than_history": True}
CHANGES = {"window_days": 30, "start_amount": 1000.0, "new": {"count": 4, "amount": 500.0},
           "amount_up": {"count": 2, "amount": 927.0}, "amount_down": {"count": 1, "amount": 27.0},
           "won": {"count": 3, "amount": 600.0}, "lost": {"count": 2, "amount": 300.0}, "end_amount": 1500.0,
           "residual": 0.0, "pushed_out": None, "pulled_in": None}


def test_bottleneck_change_has_the_sign_of_the_move_and_says_worse():
    assert bottleneck_sentence(BOTTLENECK) == "conversion 2% in the last 90 days vs 18% before (−89%, worse)"
    dwell = {**BOTTLENECK, "metric": "dwell", "recent": 30.0, "prior": 20.0}
    assert bottleneck_sentence(dwell) == "median time in stage 30.0 days in the last 90 days vs 20.0 before (+50%, worse)"


def test_won_is_green_and_losses_red_in_the_waterfall():
    steps = waterfall_steps(CHANGES)
    kinds = {name: kind for name, _v, kind in steps}
    assert STEP_COLOURS[kinds["won"]] == PALETTE["good"] and STEP_COLOURS[kinds["lost"]] == PALETTE["bad"]
    # the bars add up: start + flows = end
    assert sum(v for _n, v, k in steps if k != "total") + steps[0][1] == pytest.approx(steps[-1][1])
    by_count = count_waterfall_steps(CHANGES, open_end=11)
    assert [v for _n, v, _k in by_count] == [12, 4, -3, -2, 11]  # start = 11 - 4 + 3 + 2


@pytest.fixture(scope="module")
def data():
    from features.synthetic import generate_data

    return generate_data(n_deals=900, seed=1)[0]


def test_page_reads_right(data):
    m = pipeline_metrics(data, "2024-11-15")
    html = render_html(m, currency="EUR")
    t = m["total"]
    assert f"<span>Open deals</span><b>{t['funnel']['open']:,}</b>" in html
    assert "amounts in EUR" in html and "€" in html
    assert f"amount up {t['changes']['amount_up']['count']:,}" in html  # captions in words, not snake_case
    assert not re.search(r"\b(amount_up|amount_down|pushed_out|pulled_in)\b", html)
    assert f"fill='{PALETTE['good']}'" in html  # the won bar
    assert "grid-template-columns:minmax(0,1fr)" in html  # the one-column layout below 900 px


def test_data_without_amounts_shows_counts(data):
    no_amounts = dataclasses.replace(data, deals=data.deals.assign(amount=np.nan),
                                     stage_events=data.stage_events.assign(amount=np.nan))
    m = pipeline_metrics(no_amounts, "2024-11-15")
    assert not has_amounts(m["total"])
    html = render_html(m, currency="USD")
    assert "Open pipeline" not in html and "$0" not in html
    assert f"<span>Open deals</span><b>{m['total']['funnel']['open']:,}</b>" in html
    stale = m["total"]["stale"]
    assert f"<span>Stale</span><b>{stale['count']:,} of {stale['open_deals']:,}</b>" in html
    assert "<th>deal</th><th class=text>why stale</th>" in html  # no column of unknown amounts
    c = m["total"]["changes"]
    assert "(deals: no amounts known)" in html and f">+{c['new']['count']:,}<" in html  # the waterfall by count
    assert f">{m['total']['funnel']['open']:,}</text>" in html  # its end bar: the open deals


def test_stale_deals_are_counted_listed_and_said_to_be_in_the_pipeline(data):
    m = pipeline_metrics(data, "2024-11-15", group_by="segment")
    stale = m["total"]["stale"]
    assert stale["count"] > 0  # deals longer in their first stage than any won deal stayed there
    html = render_html(m, currency="EUR")
    assert f"<span>Stale</span><b>{stale['count']:,} · €" in html
    assert f"<h2>Stale deals ({stale['count']:,})</h2>" in html
    first = stale["deals"][0]
    assert f"<td>{first['deal_id']}</td>" in html and f"<td class=text>{first['reason']}</td>" in html
    assert f"{stale['count']:,} of {stale['open_deals']:,} open deals" in html
    assert "the open pipeline, coverage and velocity above include them" in html
    assert "<th>stale</th>" in html  # a column of the group table


def test_a_pipeline_without_stale_deals_has_no_stale_section(data):
    m = pipeline_metrics(data, "2024-11-15")
    m["total"]["stale"] = {**m["total"]["stale"], "count": 0, "amount": 0.0, "deals": []}
    html = render_html(m)
    assert "Stale deals" not in html and "<span>Stale</span><b>0 · 0</b>" in html


def test_losses_at_an_unknown_stage_are_said_not_drawn_in_the_first_stage(data):
    m = pipeline_metrics(data, "2024-11-15")
    assert "a stage nobody saw" not in render_html(m)  # a recorded history: every loss has its stage
    m["total"]["funnel"]["closed_at_unknown_stage"] = {"won": 1200, "lost": 340}
    html = render_html(m)
    assert "340 lost and 1,200 won deals closed at a stage nobody saw" in html and "--append" in html

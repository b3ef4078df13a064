"""The number rules every HTML page follows (`features.htmlkit`), on hand-built values."""
from __future__ import annotations

import math

import pytest

from features import htmlkit as kit


@pytest.mark.parametrize("value,currency,compact,expected", [
    (1467, None, False, "1,467"),
    (1_234_567.4, "USD", False, "$1,234,567"),
    (1_234_567, "EUR", True, "€1.23M"),
    (999.6, "EUR", True, "€1.0k"),  # rounds up into the next unit, never "€1000"
    (12_500, "gbp", True, "£12.5k"),
    (2_500_000_000, None, True, "2.50B"),
    (-414_300, "EUR", True, "−€414.3k"),
    (980, "CHF", True, "980 CHF"),
    (0, "USD", True, "$0"),
    (None, "USD", True, "–"),
    (math.nan, "USD", True, "–"),
])
def test_money(value, currency, compact, expected):
    assert kit.money(value, currency, compact) == expected


def test_counts_numbers_ratios_and_shares():
    assert kit.count(1467) == "1,467" and kit.count(1_000_000) == "1,000,000" and kit.count(None) == "–"
    assert kit.num(44.3217, 2) == "44.32" and kit.num(12345.6) == "12,346"
    assert kit.ratio(1.74) == "1.74×" and kit.ratio(2) == "2.00×" and kit.ratio(0.7349) == "0.73×"
    assert kit.ratio(None) == "–"
    assert kit.pct(0.18) == "18%" and kit.pct(0.16146, 2) == "16.15%" and kit.pct(None) == "–"


@pytest.mark.parametrize("recent,prior,higher_is_better,expected", [
    (0.02, 0.18, True, "−89%, worse"),  # a conversion that fell
    (0.27, 0.18, True, "+50%, better"),
    (30.0, 20.0, False, "+50%, worse"),  # a dwell that grew
    (15.0, 20.0, False, "−25%, better"),
    (0.18, 0.18, True, "unchanged"),
    (0.1, 0.0, True, "no comparable history"),
    (None, 0.2, True, "no comparable history"),
])
def test_change_words_have_the_right_sign_and_word(recent, prior, higher_is_better, expected):
    assert kit.change_words(recent, prior, higher_is_better) == expected


def test_signed_and_words():
    assert kit.signed(927, kit.count) == "+927"
    assert kit.signed(-1200, lambda x: kit.money(x, "EUR")) == "−€1.2k"
    assert kit.signed(0, kit.count) == "±0"
    assert kit.words("amount_up") == "amount up" and kit.words("p10_p90_hit_rate") == "P10 P90 hit rate"
    assert kit.words("landing_p10/p50/p90 = closed_so_far + the rest") == "landing P10/P50/P90 = closed so far + the rest"
    assert kit.words("p_hit_target = share") == "P(hit target) = share"


def test_nice_axis_tops():
    assert [kit.nice_ceiling(x) for x in (0.7, 1.0, 1.3, 2.2, 4.1, 7.0, 5.8e6)] == [0.8, 1.0, 1.5, 2.5, 5.0, 8.0, 6e6]
    assert kit.nice_ceiling(0) == 1.0


def test_pages_are_self_contained_and_escaped():
    html = kit.page("Q <1>", "sub", kit.section("A & B", kit.table(["a_b", "c"], [["<x>", "1,000"]])))
    assert "<script" not in html and "http" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "Q &lt;1&gt;" in html and "A &amp; B" in html and "&lt;x&gt;" in html
    assert "@media (max-width:900px)" in html  # the grid collapses to one column below 900 px

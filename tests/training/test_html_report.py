"""The forecast report for finance is a pure function of its data: rendered from
hand-built briefing dicts, its numbers read as a CFO expects."""
from __future__ import annotations

import re

import pytest

from training.forecast.html_report import accuracy_html, forecast_html

ALL = "(all)"


def _period(name: str, partial: bool, closed: float, rest: float) -> dict:
    return {"period": name, "start": "2024-05-20T00:00:00", "end": "2024-07-01T00:00:00", "partial": partial,
            "group": ALL, "expected": rest, "open_pipeline": rest * 0.8, "new_deals": rest * 0.2, "p10": rest * 0.8,
            "p50": rest, "p90": rest * 1.2, "closed_so_far": closed, "landing_expected": closed + rest,
            "landing_p10": closed + rest * 0.8, "landing_p50": closed + rest, "landing_p90": closed + rest * 1.2}


def briefing_doc(periods: int = 2, value_unit: str = "amount", currency: str | None = "EUR", **extra) -> dict:
    rows = [_period("2024Q2", True, 1_656_947.0, 1_582_906.9), _period("2024Q3", False, 0.0, 4_661_929.1)][:periods]
    doc = {"as_of": "2024-05-20T00:00:00", "freq": "quarter", "value_unit": value_unit, "group_by": None,
           "notes": ["model leadscore v3"], "periods": [{"period": r["period"]} for r in rows], "forecast": rows,
           "parts": "open_pipeline = ...", "ranges": {"method": "estimated from past periods", "relative_sd": 0.05,
                                                       "open_factor": 0.8656, "new_factor": 1.0414, "periods_used": 4},
           "history": [{"period": "2024Q1", "actual": 2_977_850.0, "so_far": False}],
           "targets": [{"period": "2024Q2", "group": ALL, "target": 3_000_000.0, "closed_won_so_far": 1_656_947.0,
                        "landing_p50": 3_239_853.9, "p_hit_target": 0.856, "gap_to_target": -239_853.9,
                        "open_pipeline_due": 5_471_703.0, "pipeline_coverage": 4.0747, "leads_needed": 0}],
           "target_definitions": {"pipeline_coverage": "pipeline coverage = open pipeline due / remaining gap"},
           **extra}
    math = [{"period": r["period"], "partial": r["partial"], "open_deals": 1_319, "open_pipeline_value": 8_396_466.0,
             "p_won_in_period": r["open_pipeline"] / 8_396_466.0, "open_pipeline": r["open_pipeline"],
             "new_deals": r["new_deals"], "closed_so_far": r["closed_so_far"],
             "landing_expected": r["landing_expected"], "landing_p10": r["landing_p10"],
             "landing_p50": r["landing_p50"], "landing_p90": r["landing_p90"], "open_factor": 0.8656} for r in rows]
    risk = [{"deal_id": f"D{i:04d}", "group": ALL, "stage": "proposal", "amount": 1000.0 * (40 - i),
             "close_probability": 0.3, "expected_in_period": 300.0 * (40 - i), "value_at_risk": 300.0 * (40 - i),
             "reasons": "close date pushed 1 time(s), 24 days in total"} for i in range(25)]
    changes = {"previous_as_of": "2024-04-20T00:00:00", "period": "2024Q2", "model_version": "2",
               "groups": [{"group": ALL, "previous_landing_p10": 3.1e6, "previous_landing_p50": 3_549_711.9,
                           "previous_landing_p90": 3.9e6, "previous_closed_so_far": 559_883.0,
                           "now_landing_p10": rows[0]["landing_p10"], "now_landing_p50": rows[0]["landing_p50"],
                           "now_landing_p90": rows[0]["landing_p90"], "now_closed_so_far": 1_656_947.0}],
               "deals": {"new": {"count": 267, "value": 6_376_439.0}, "won": {"count": 76, "value": 1_097_064.0},
                         "lost": {"count": 174, "value": 5_670_225.0}, "pushed": {"count": 4, "value": 23_295.0},
                         "pulled_in": {"count": 0, "value": 0.0}, "amount_up": {"count": 49, "value": 135_739.0},
                         "amount_down": {"count": 67, "value": 286_541.0}, "without_amount": 0}}
    track = {"by_horizon": [{"group_value": ALL, "horizon": 0, "periods": 3, "booked": 9_000_000.0, "wape": 0.0656,
                             "bias": -0.0656, "within_5pct": 1 / 3, "within_15pct": 1.0, "p10_p90_hit_rate": 1.0}],
             "periods": [{"period_start": "2024-01-01T00:00:00.000", "group_value": ALL, "horizon": 0,
                          "as_of": "2024-01-20T00:00:00.000", "landing_p50": 3.1e6, "booked": 2_977_850.0,
                          "error": 122_150.0, "in_p10_p90": True}]}
    return {"forecast": doc, "currency": currency, "math": math, "risk_ranked": risk,
            "risk_total": {"count": 153, "value_at_risk": 493_271.1, "open_deals": 1_319, "definition": "value at risk = x"},
            "changes": changes, "track_record": track, "store_note": None}


def test_headline_landing_and_chance_of_hitting_target_with_currency():
    html = forecast_html(briefing_doc())
    assert "2024Q2 landing (in progress)</span><b>€3.24M</b>" in html
    assert "P10–P90 €2.92M – €3.56M; closed so far €1.66M + rest €1.58M" in html
    assert "P(hit 2024Q2 target)</span><b>86%</b>" in html and "coverage 4.07×" in html
    assert "<td>4.07×</td>" in html  # coverage with two decimals in the targets table
    assert "amounts in EUR" in html and "<script" not in html


def test_numbers_have_separators_and_headers_are_words():
    html = forecast_html(briefing_doc(currency="USD"))
    assert "$8.40M (1,319 deals)" in html and "<td>15.08%</td>" in html  # the math: value x P(won) = expected
    headers = re.findall(r"<th[^>]*>([^<]*)</th>", html)
    assert headers and not [h for h in headers if "_" in h]
    assert "153 of 1,319 open deals are at risk" in html and "$493.3k value at risk" in html


def test_what_changed_reads_as_a_move_with_its_sign():
    html = forecast_html(briefing_doc())
    assert "<td>€3.55M</td><td>€3.24M</td><td>−€309.9k (−9%, worse)</td>" in html
    assert "<td>Pushed out of 2024Q2</td><td>4</td><td>€23.3k</td>" in html
    assert "<td>Amount lowered</td><td>67</td><td>−€286.5k</td>" in html
    html = forecast_html({**briefing_doc(), "changes": {"previous_as_of": None, "period": "2024Q2",
                                                        "reason": "no forecast of 2024Q2 was stored before 2024-05-20"}})
    assert "Nothing to compare with: no forecast of 2024Q2 was stored before 2024-05-20." in html


def test_one_period_is_a_band_and_a_period_in_progress_its_landing():
    html = forecast_html(briefing_doc(periods=1))
    chart = html[html.index("<svg"):html.index("</svg>")]
    band = re.search(r"<rect x='[\d.]+' y='([\d.]+)' width='([\d.]+)' height='([\d.]+)' rx='2' fill='#bfdbfe'", chart)
    assert band and float(band.group(2)) > 10 and float(band.group(3)) > 10  # a band, not a dot
    assert "€3.24M" in chart and "2024Q2 (in progress)" in chart  # the landing, not the rest (€1.58M)
    assert "target €3.00M" in chart and ">€2.98M<" in chart  # the target line and the whole-period actual


STALE = {"stale_open_count": 812, "stale_open_value": 6_400_000.0, "open_count": 1_319, "open_value": 8_396_466.0,
         "stale_expected_bookings": 41_250.0, "stale_expected_by_period": [30_000.0, 11_250.0],
         "definition": "stale: open longer than the give-up age"}


def test_won_deals_forecasts_count_and_the_stale_pipeline_is_said():
    doc = briefing_doc(value_unit="won deals", stale_pipeline={**STALE, "stale_open_value": 812.0, "open_value": 1319.0,
                                                               "stale_expected_bookings": 3.5,
                                                               "stale_expected_by_period": [2.5, 1.0]})
    html = forecast_html(doc)
    assert "won deals (no amounts known)" in html and "€" not in html
    assert "<h2>Stale pipeline</h2><p><b>812 of 1,319</b> open deals are stale, worth <b>812.0</b> of 1,319.0 " \
           "(62%). The forecast expects 3.5 from them (2024Q2 2.5; 2024Q3 1.0), included in the figures below." in html
    assert "<td>Won</td><td>76</td><td>–</td>" in html and "<td>Amount raised</td><td>49</td><td>–</td>" in html


@pytest.mark.parametrize("store_note", [None, "the track-record store is unavailable: disk full"])
def test_without_a_store_the_page_says_so(store_note):
    doc = {**briefing_doc(), "changes": None, "track_record": None, "store_note": store_note}
    html = forecast_html(doc)
    assert (store_note or "The track-record store was not given.") in html


def test_track_record_page():
    track = briefing_doc()["track_record"]
    html = accuracy_html({**track, "freq": "quarter", "group_column": ""}, "GBP")
    assert "Forecast track record (quarterly, company total)" in html and "By horizon" in html
    assert "<td>6.6%</td><td>−6.6%</td><td>33%</td><td>100%</td><td>100%</td>" in html  # WAPE, bias, shares
    assert "<td>£3.10M</td><td>£2.98M</td><td>+£122.2k</td><td>yes</td>" in html


def test_the_stale_pipeline_is_valued_in_the_currency_and_absent_without_stale_deals():
    html = forecast_html(briefing_doc(stale_pipeline=STALE))
    assert "<b>812 of 1,319</b> open deals are stale, worth <b>€6.40M</b> of €8.40M (76%)" in html
    assert "expects €41.2k from them (2024Q2 €30.0k; 2024Q3 €11.2k)" in html
    assert "stale: open longer than the give-up age." in html
    assert "Stale pipeline" not in forecast_html(briefing_doc(stale_pipeline={**STALE, "stale_open_count": 0}))
    assert "Stale pipeline" not in forecast_html(briefing_doc())

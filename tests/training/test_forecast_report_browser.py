"""The forecast report for finance, from a real forecast and a real store, opened in
headless Chromium at 1,280 and 800 px: no console message, nothing wider than the
window, the headline numbers on the page. (`docs/screenshots.py` makes
docs/forecast_report.png.)"""
from __future__ import annotations

import re

import pandas as pd
import pytest
from chromium import CHROMIUM, layout, screenshot

from features.htmlkit import money, pct
from training.forecast.briefing import briefing
from training.forecast.config import ForecastConfig
from training.forecast.html_report import forecast_html
from training.forecast.outlook import outlook
from training.forecast.track_record import store_forecast
from training.store.connection import open_store

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent: "
                                "apt-get install -y chromium (CI installs it)")
FAST = ForecastConfig(n_sims=300, seed=4)
TARGETS = pd.DataFrame({"period": ["2024Q2", "2024Q3"], "target": ["3000000", "4000000"]})


@pytest.fixture(scope="module")
def report(small_data, small_predictor, tmp_path_factory):
    data = small_data[0]
    store = open_store(f"sqlite:///{tmp_path_factory.mktemp('store') / 'store.db'}")
    for as_of in ("2024-01-15", "2024-04-20"):
        store_forecast(store, outlook(small_predictor, data, as_of, periods=2, freq="quarter", config=FAST),
                       "leadscore", 1, "fp")
    now = outlook(small_predictor, data, "2024-05-20", periods=2, freq="quarter", targets=TARGETS, config=FAST)
    store_forecast(store, now, "leadscore", 2, "fp")
    b = briefing(now, data, store, "EUR")
    store.close()
    return b


@pytest.mark.parametrize("width", (1280, 800))
def test_report_renders_without_console_errors_or_overflow(report, tmp_path, width):
    html = forecast_html(report)
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:)?//""", html) and "<script" not in html
    page = tmp_path / "forecast.html"
    page.write_text(html)
    assert screenshot(page, tmp_path / "forecast.png", tmp_path / "profile", width=width, height=4200) == []
    seen = layout(html, width, tmp_path)
    assert seen["scroll_width"] <= seen["client_width"] == width and seen["sticking_out"] == []
    head = report["forecast"]["headline"]
    assert f"<b>{money(head['landing_p50'], 'EUR')}</b>" in html and f"<b>{pct(head['p_hit_target'])}</b>" in html
    for shown in ("What changed since the previous forecast", "See the math", "Deals at risk in 2024Q2",
                  "Track record", "Periods ahead"):
        assert shown in html

"""The HTML pipeline report, opened in headless Chromium at 1,280 and 800 px: it renders
offline, without a console message, with nothing wider than the window, its headline
numbers on the page. (`docs/screenshots.py` makes docs/pipeline_report.png.)"""
from __future__ import annotations

import re

import pytest
from chromium import CHROMIUM, layout, screenshot

from features.analytics import pipeline_metrics
from features.report import render_html

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent: "
                                "apt-get install -y chromium (CI installs it)")
WIDTHS = (1280, 800)


@pytest.fixture(scope="module")
def metrics():
    from features.synthetic import generate_data

    data, _truth = generate_data(n_deals=3000, seed=1)
    return pipeline_metrics(data, "2024-11-15", group_by="region", target=2_000_000)


@pytest.mark.parametrize("width", WIDTHS)
def test_report_renders_without_console_errors_or_overflow(metrics, tmp_path, width):
    html = render_html(metrics, currency="EUR")
    # self-contained: nothing is fetched (the only URL is the SVG namespace, never loaded)
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:)?//""", html)
    assert "<script" not in html
    page = tmp_path / "report.html"
    page.write_text(html)
    assert screenshot(page, tmp_path / "report.png", tmp_path / "profile", width=width) == []
    assert (tmp_path / "report.png").stat().st_size > 50_000  # a real page, not a blank one
    seen = layout(html, width, tmp_path)
    assert seen["scroll_width"] <= seen["client_width"] == width and seen["sticking_out"] == []
    t = metrics["total"]
    for shown in (f"<b>{t['funnel']['open']:,}</b>", "Funnel", "Time in stage", "Sales velocity trend",
                  "Pipeline changes", "Cohorts", "Stalled deals", "By region"):
        assert shown in html


def test_overflow_and_console_errors_are_caught(tmp_path):
    """The checks above can fail: a page wider than the window, a page with an uncaught error."""
    wide = "<html><body><div style='width:1500px'>x</div></body></html>"
    seen = layout(wide, 800, tmp_path)
    assert seen["scroll_width"] > seen["client_width"] and seen["sticking_out"]
    page = tmp_path / "bad.html"
    page.write_text("<html><body><p>x</p><script>undefinedFunction();</script></body></html>")
    console = screenshot(page, tmp_path / "bad.png", tmp_path / "profile", height=200)
    assert any("Uncaught ReferenceError" in line for line in console)


def test_static_report_renders(tmp_path):
    import pandas as pd

    from features.schema import DatasetMeta
    from features.validation import validate

    deals = pd.DataFrame({"deal_id": [f"L{i}" for i in range(8)], "source": list("aabbccdd"),
                          "outcome": ["won", "lost"] * 4})
    data = validate(deals, DatasetMeta(stages=["lead"], static=True)).data
    page = tmp_path / "static.html"
    page.write_text(render_html(pipeline_metrics(data, None)))
    assert screenshot(page, tmp_path / "static.png", tmp_path / "profile", width=800, height=600) == []

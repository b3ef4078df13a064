"""The HTML pipeline report, opened in headless Chromium: it renders offline, without a
console message, and its screenshot is saved as docs/pipeline_report.png.

Chromium's `--enable-logging=stderr` prints every console message and uncaught error
as an `INFO:CONSOLE` line; the report has no script, so any such line is a failure.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from features.analytics import pipeline_metrics
from features.report import render_html

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "pipeline_report.png"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--enable-logging=stderr", "--v=0",
         "--hide-scrollbars"]
CONSOLE_LINE = re.compile(r":CONSOLE[:(]\d*\)?\]? .*|Uncaught .*")

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent: "
                                "apt-get install -y chromium (CI installs it)")


def render_in_chromium(html_path: Path, png_path: Path, tmp_path: Path, height: int = 2780) -> list[str]:
    """Screenshot `html_path`; returns the console lines Chromium logged."""
    cmd = [str(CHROMIUM), *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png_path}",
           f"--window-size=1320,{height}", html_path.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert png_path.exists() and png_path.stat().st_size > 0, done.stderr[-2000:]
    return [m.group(0) for line in done.stderr.splitlines() if (m := CONSOLE_LINE.search(line))]


@pytest.fixture(scope="module")
def metrics():
    from features.synthetic import generate_data

    data, _truth = generate_data(n_deals=3000, seed=1)
    return pipeline_metrics(data, "2024-11-15", group_by="region", target=2_000_000)


def test_report_renders_without_console_errors(metrics, tmp_path):
    html = render_html(metrics)
    # self-contained: nothing is fetched (the only URL is the SVG namespace, never loaded)
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:)?//""", html)
    assert "<script" not in html
    page = tmp_path / "report.html"
    page.write_text(html)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    console = render_in_chromium(page, SCREENSHOT, tmp_path)
    assert console == []
    assert SCREENSHOT.stat().st_size > 50_000  # a real page, not a blank one
    for heading in ("Funnel", "Time in stage", "Sales velocity trend", "Pipeline changes", "Cohorts",
                    "Stalled deals", "By region"):
        assert heading in html


def test_console_errors_are_caught(tmp_path):
    """The check above can fail: a page with an uncaught error is reported."""
    page = tmp_path / "bad.html"
    page.write_text("<html><body><p>x</p><script>undefinedFunction();</script></body></html>")
    console = render_in_chromium(page, tmp_path / "bad.png", tmp_path, height=200)
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
    assert render_in_chromium(page, tmp_path / "static.png", tmp_path, height=600) == []

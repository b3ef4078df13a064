"""Screenshots of the two HTML reports for the README: docs/pipeline_report.png and
docs/forecast_report.png, at 1,280 px, from generated data (the tests' small history and
predictor, a store with two earlier forecasts so "what changed" and the track record
show). Run from the repository root: `PYTHONPATH=. python docs/screenshots.py`.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the Chromium driver and the cached small model

WIDTH = 1280


def shoot(html: str, png: Path, folder: Path) -> None:
    from chromium import layout, screenshot

    height = layout(html, WIDTH, folder)["scroll_height"]
    page = folder / f"{png.stem}.html"
    page.write_text(html)
    console = screenshot(page, png, folder / "profile", width=WIDTH, height=height)
    if console:
        raise SystemExit(f"{png.name}: console messages {console}")
    print(f"wrote {png} ({WIDTH} x {height})")


def pipeline_page() -> str:
    from features.analytics import pipeline_metrics
    from features.report import render_html
    from features.synthetic import generate_data

    data, _truth = generate_data(n_deals=3000, seed=1)
    return render_html(pipeline_metrics(data, "2024-11-15", group_by="region", target=2_000_000), currency="EUR")


def forecast_page(folder: Path) -> str:
    import models_cache
    import pandas as pd

    from training.forecast.briefing import briefing
    from training.forecast.config import ForecastConfig
    from training.forecast.html_report import forecast_html
    from training.forecast.outlook import outlook
    from training.forecast.track_record import store_forecast
    from training.store.connection import open_store

    data, predictor = models_cache.small_data()[0], models_cache.small_predictor()
    config = ForecastConfig(n_sims=1000, seed=0)
    store = open_store(f"sqlite:///{folder / 'store.db'}")
    for as_of in ("2023-10-10", "2024-01-15", "2024-04-20"):
        store_forecast(store, outlook(predictor, data, as_of, periods=2, freq="quarter", config=config),
                       "leadscore", 1, "screenshot")
    targets = pd.DataFrame({"period": ["2024Q2", "2024Q3"], "target": ["3000000", "4000000"]})
    now = outlook(predictor, data, "2024-05-20", periods=2, freq="quarter", targets=targets, config=config)
    store_forecast(store, now, "leadscore", 2, "screenshot")
    return forecast_html(briefing(now, data, store, "EUR"))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shoot(pipeline_page(), ROOT / "docs" / "pipeline_report.png", folder)
        shoot(forecast_page(folder), ROOT / "docs" / "forecast_report.png", folder)


if __name__ == "__main__":
    main()

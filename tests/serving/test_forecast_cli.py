"""The `forecast` and `backtest` commands: file I/O at the top, the same JSON as the service."""
from __future__ import annotations

import json

import models_cache
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.dataset import write_dataset
from serving.cli import app
from serving.cli.forecast import read_targets, write_forecast
from serving.report_schemas import ForecastReport
from training.forecast.config import ForecastConfig
from training.forecast.outlook import outlook
from training.forecast.report import forecast_dict

AS_OF = "2024-06-10"
FAST = ForecastConfig(n_sims=200, seed=0)


def test_targets_file_keeps_region_na(tmp_path):
    path = tmp_path / "targets.csv"
    path.write_text("period,region,target\n2024-06,NA,500000\n")
    frame = read_targets(path)
    assert frame["region"].tolist() == ["NA"] and frame["target"].tolist() == ["500000"]


@pytest.mark.parametrize("args", [["forecast", "--out", "f.xlsx"], ["backtest", "--out", "b.csv"]])
def test_bad_out_suffix_is_one_line(tmp_path, args):
    out = CliRunner().invoke(app, [*args, "--data", str(tmp_path / "nowhere")])
    assert out.exit_code == 2, out.output
    assert "--out" in out.output and "Traceback" not in out.output


def test_write_forecast_by_suffix(tmp_path, monkeypatch):
    monkeypatch.setenv("LEADSCORE_STORE_URL", f"sqlite:///{tmp_path / 'store.db'}")
    data, _truth = models_cache.small_data()
    result = outlook(models_cache.small_predictor(), data, AS_OF, periods=2, config=FAST)
    write_forecast(result, tmp_path / "f.csv")
    table = pd.read_csv(tmp_path / "f.csv")
    assert {"period", "group", "expected", "open_pipeline", "new_deals", "p10", "p50", "p90"} <= set(table.columns)
    assert len(pd.read_csv(tmp_path / "f.risk.csv")) == len(result.risk)
    assert json.loads(write_forecast(result, tmp_path / "f.json").read_text()) == forecast_dict(result)
    page = write_forecast(result, tmp_path / "f.html", data, "EUR").read_text()
    assert "Revenue forecast as of 2024-06-10" in page and "<svg" in page and "€" in page
    assert "Nothing to compare with" in page  # an empty store: no previous forecast
    risk = pd.read_csv(tmp_path / "f.risk.csv")  # beside the page: every deal at risk, largest value at risk first
    assert len(risk) == len(result.risk) and risk["value_at_risk"].is_monotonic_decreasing


@pytest.mark.parametrize("currency", ["euro", "E1", "€"])
def test_bad_currency_is_one_line(tmp_path, currency):
    out = CliRunner().invoke(app, ["forecast", "--out", str(tmp_path / "f.html"), "--data", str(tmp_path),
                                   "--currency", currency])
    assert out.exit_code == 2, out.output
    assert "--currency" in out.output and "Traceback" not in out.output


def test_forecast_command_writes_the_one_forecast_json(tmp_path, local_mlflow_uri):
    from training.run import log_run

    data, _truth = models_cache.small_data()
    folder = write_dataset(data, tmp_path / "data")
    log_run(models_cache.small_train_result(), data, "forecast-cli", "leadscore", folder)
    out = CliRunner().invoke(app, ["forecast", "--data", str(folder), "--as-of", AS_OF, "--periods", "2",
                                   "--sims", "200", "--no-log", "--out", str(tmp_path / "f.json")])
    assert out.exit_code == 0, out.output
    written = json.loads((tmp_path / "f.json").read_text())
    local = forecast_dict(outlook(models_cache.small_predictor(), data, AS_OF, periods=2, config=FAST))
    assert written["notes"][-1].startswith("model leadscore v")
    assert {k: v for k, v in written.items() if k != "notes"} == {k: v for k, v in local.items() if k != "notes"}
    assert written["headline"]["period"] == "2024-06" and written["headline"]["closed_so_far"] > 0
    ForecastReport.model_validate(written)  # the documented forecast JSON (the /forecast schema without `data`)
    # a targets file with a group column needs the matching --group-by: one line, nothing written
    (tmp_path / "t.csv").write_text("period,region,target\n2024-06,NA,500000\n")
    bad = CliRunner().invoke(app, ["forecast", "--data", str(folder), "--as-of", AS_OF, "--targets",
                                   str(tmp_path / "t.csv"), "--no-log", "--out", str(tmp_path / "g.json")])
    assert bad.exit_code != 0 and "--group-by region" in bad.output and "Traceback" not in bad.output
    assert not (tmp_path / "g.json").exists()


@pytest.mark.parametrize("unit, said", [
    ("amount", "stale pipeline: 812 of 1,319 open deals, value 6.40M, expected bookings from them 41.25k"),
    ("won deals", "stale pipeline: 812 of 1,319 open deals, expected won deals from them 3.5 (included above)")])
def test_the_summary_says_the_stale_pipeline_in_the_forecasts_unit(unit, said):
    from serving.cli.console import console
    from serving.cli.forecast import print_forecast_summary

    stale = {"stale_open_count": 812, "open_count": 1319, "stale_open_value": 6.4e6 if unit == "amount" else 812.0,
             "stale_expected_bookings": 41_250.0 if unit == "amount" else 3.5}
    with console.capture() as shown:
        print_forecast_summary({"as_of": "2025-01-01", "value_unit": unit, "forecast": [], "stale_pipeline": stale,
                                "notes": [], "out": "f.json"})
    assert said in " ".join(shown.get().split())

"""Forecast and backtest outputs as values: the one forecast JSON (the CLI, MLflow and
the service's /forecast all use `forecast_dict`; its MLflow run is `run_log.log_forecast`),
the CSV table and the backtest's MLflow run. The HTML report is `html_report.forecast_html` (over `briefing`).
Writing files is the CLI's job.
"""
from __future__ import annotations

import pandas as pd

from features.jsonsafe import json_safe
from training.forecast.newdeals import ALL
from training.forecast.outlook import Outlook
from training.forecast.run_log import EXPERIMENT

PARTS = ("open_pipeline = deals open at the as-of date; new_deals = deals not created yet that are created and won "
         "inside the period; expected = their sum (analytic expectation); p10/p50/p90 = Monte Carlo quantiles of "
         "that rest of the period; closed_so_far = closed-won in the period up to the as-of date; landing_expected "
         "and landing_p10/p50/p90 = closed_so_far + the rest (quantiles of the simulated landings)")
HEADLINE_COLUMNS = ("period", "partial", "closed_so_far", "expected", "landing_expected", "landing_p10",
                    "landing_p50", "landing_p90")
RANGES = ("Monte Carlo over deal outcomes, close timing (log-normal time to a won close) and Poisson new-win counts, "
          "plus one common shock per simulation")


# ---- plain data ---------------------------------------------------------------------------

def forecast_dict(result: Outlook) -> dict:
    """Everything in the forecast, its risk list and target report as JSON-ready data."""
    fc = result.forecast
    out = {"as_of": fc.as_of, "freq": fc.freq, "value_unit": fc.value_unit, "group_by": fc.group_by,
           "headline": headline(result), "notes": fc.notes, "periods": fc.periods.to_dict("records"),
           "forecast": fc.table.to_dict("records"), "parts": PARTS,
           "ranges": {"method": RANGES, **{k: v for k, v in fc.shock.items() if k != "history"},
                      "history": fc.shock.get("history")},
           "new_deal_model": fc.new_deals.describe(), "stale_pipeline": fc.stale,
           "risk": result.risk.to_dict("records"),
           "history": None if fc.history is None else fc.history.to_dict("records"),
           "targets": None if result.targets is None else result.targets.table.to_dict("records")}
    if result.targets is not None:
        out["target_definitions"] = result.targets.definitions()
    return json_safe(out)


def headline(result: Outlook) -> dict:
    """Where the first period (the one in progress, when partial) lands: closed so far +
    the rest, with its range, and P(hit target) when there is a company target for it."""
    first = result.forecast.totals().iloc[0]
    out = {k: first[k] for k in HEADLINE_COLUMNS}
    if result.targets is not None:
        t = result.targets.table
        hit = t.loc[(t["period"] == first["period"]) & (t["group"] == ALL)]
        if len(hit):
            out.update(target=hit["target"].iloc[0], p_hit_target=hit["p_hit_target"].iloc[0])
    return out


def forecast_table(result: Outlook) -> pd.DataFrame:
    """The forecast table (one row per period and group), with the target columns when given."""
    table = result.forecast.table
    if result.targets is not None:
        table = table.merge(result.targets.table, on=["period", "group"], how="left")
    return table


# ---- MLflow (a forecast's run: `run_log.log_forecast`) ---------------------------------------

def backtest_figure(result: dict):
    from training.plots import forecast_fan

    rows = pd.DataFrame(result["rows"])
    freq = "M" if result["freq"] == "month" else "Q"
    periods = pd.PeriodIndex(pd.to_datetime(rows["origin"]), freq=freq)
    return forecast_fan(periods, rows["model_p10"], rows["model_p50"], rows["model_p90"], actuals=rows["actual"],
                        title="Backtest: forecast at each origin vs actual", ylabel=result.get("value_unit", "bookings"))


def log_backtest(result: dict, params: dict) -> str:
    """One MLflow run: WAPE, bias, coverage and pinball of the model and each baseline, the chart, the JSON."""
    import mlflow

    from training.tracking import start_run

    with start_run(EXPERIMENT, run_name="backtest", tags={"leadscore.kind": "backtest"}) as run:
        mlflow.log_params({k: str(v) for k, v in params.items()})
        summary = result["summary"]
        blocks = {"model": summary["model"], **{f"baseline_{k}": v for k, v in summary["baselines"].items()}}
        if "oracle" in summary:
            blocks["oracle"] = summary["oracle"]
        for name, block in blocks.items():
            for key in ("wape", "bias", "coverage_p10_p90", "pinball"):
                if block.get(key) is not None:
                    mlflow.log_metric(f"{name}_{key}", float(block[key]))
        mlflow.log_figure(backtest_figure(result), "plots/backtest.png")
        mlflow.log_dict(result, "backtest.json")
        return run.info.run_id

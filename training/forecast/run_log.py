"""A forecast's MLflow run, made from the one forecast JSON (`report.forecast_dict`) alone:
the totals as metrics (one call), the fan chart (the HTML report's SVG: MLflow shows it) and
the JSON. Plain data in, so a command can log it in a process that never loads the
forecast's own code (`serving/cli/side_process.py`): this module imports none of it.
"""
from __future__ import annotations

from training.forecast.fan_chart import fan_svg
from training.forecast.html_report import value_formatter

EXPERIMENT = "leadscore-forecast"
TOTAL_COLUMNS = ("expected", "open_pipeline", "new_deals", "p10", "p50", "p90", "closed_so_far", "landing_p10",
                 "landing_p50", "landing_p90")


def log_forecast(doc: dict, params: dict, total_group: str) -> str:
    """One MLflow run of the forecast `doc` (its rows of group `total_group` are the totals,
    `newdeals.ALL`); returns the run id."""
    import mlflow

    from training.tracking import start_run

    with start_run(EXPERIMENT, run_name=f"forecast {doc['as_of'][:10]}", tags={"leadscore.kind": "forecast"}) as run:
        mlflow.log_params({k: str(v) for k, v in params.items()})
        mlflow.log_metrics({f"{col}_{row['period'].replace('-', '_')}": _number(row[col])
                            for row in doc["forecast"] if row["group"] == total_group for col in TOTAL_COLUMNS})
        mlflow.log_text(fan_svg(doc, value_formatter(doc, None)), "plots/forecast_fan.svg")
        mlflow.log_dict(doc, "forecast.json")
        return run.info.run_id


def _number(value) -> float:
    return float("nan") if value is None else float(value)  # the JSON's null is a NaN of the table

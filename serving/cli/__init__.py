"""`leadscore`: one typer app; each command is a thin wrapper over a package function.

The commands live by subject (`data`, `models`, `forecast`, `track`, `service`, `lifecycle`, `retrain`); they read the
--data folder, call plain functions of `features` / `training`, and write --out
(`output.write_output`). User errors (bad data, bad mapping, bad option) print one line
and exit 2; an unexpected error prints one line too, with the traceback only under
LEADSCORE_DEBUG=1 (`console.readable_errors`, applied to every command here). Every
command's help ends with an example (`EXAMPLES`); third-party warnings are kept off the
console when the app starts (`console.quiet_third_party`).
"""
from __future__ import annotations

from importlib.metadata import version as package_version
from typing import Optional

import typer

from serving.cli.console import quiet_third_party, readable_errors
from serving.cli.data import features, generate, ingest, pipeline
from serving.cli.forecast import backtest, forecast
from serving.cli.lifecycle import forget, monitor
from serving.cli.models import evaluate, promote, rollback, score, train
from serving.cli.retrain import retrain
from serving.cli.service import serve
from serving.cli.track import forecast_accuracy

EXAMPLES = {
    "generate": "leadscore generate --deals 20000 --seed 0 --out data/demo",
    "ingest": "leadscore ingest --mapping export/mapping.yaml --out data/crm",
    "features": "leadscore features --data data/demo --as-of 2024-06-01,2024-07-01 --out features.parquet",
    "train": "leadscore train --data data/demo --metrics-out data/demo/metrics.json",
    "evaluate": "leadscore evaluate --data data/demo --metrics-out eval.json",
    "promote": "leadscore promote 3",
    "rollback": "leadscore rollback",
    "score": "leadscore score --data data/demo --out scores.csv",
    "pipeline": "leadscore pipeline --data data/demo --group-by team --out pipeline.html",
    "forecast": "leadscore forecast --data data/demo --periods 3 --freq month --out forecast.html",
    "backtest": "leadscore backtest --data data/demo --freq quarter --origins 8 --out backtest.json",
    "forecast_accuracy": "leadscore forecast-accuracy --data data/demo --freq month --out accuracy.html",
    "serve": "LEADSCORE_DATA=data/demo leadscore serve --port 3000",
    "monitor": "leadscore monitor --data data/demo --out monitor.html",
    "forget": "leadscore forget --data data/demo --account-id A000042",
    "retrain": "leadscore retrain --mapping export/mapping.yaml --data data/crm --bento",
}

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Predictive lead scoring and revenue forecasting.")


def show_version(value: bool) -> None:
    if value:
        print(f"leadscore {package_version('leadscore')}")
        raise typer.Exit()


@app.callback()
def main(_version: Optional[bool] = typer.Option(None, "--version", callback=show_version, is_eager=True,
                                                 help="Print the version and exit.")) -> None:
    """Predictive lead scoring and revenue forecasting."""
    quiet_third_party()


for command in (generate, ingest, features, train, evaluate, promote, rollback, score, pipeline, forecast,
                backtest, forecast_accuracy, serve, monitor, forget, retrain):
    app.command(epilog=f"Example: {EXAMPLES[command.__name__]}")(readable_errors(command))

"""`leadscore`: one typer app; each command is a thin wrapper over a package function.

The commands live by subject (`data`, `models`, `forecast`, `track`, `service`); they read the
--data folder, call plain functions of `features` / `training`, and write --out
(`output.write_output`). User errors (bad data, bad mapping, bad option) print one line
and exit 2; an unexpected error prints one line too, with the traceback only under
LEADSCORE_DEBUG=1 (`console.readable_errors`, applied to every command here).
"""
from __future__ import annotations

import typer

from serving.cli.console import readable_errors
from serving.cli.data import features, generate, ingest, pipeline
from serving.cli.forecast import backtest, forecast
from serving.cli.models import evaluate, promote, rollback, score, train
from serving.cli.service import serve
from serving.cli.track import forecast_accuracy

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Predictive lead scoring and revenue forecasting.")

for command in (generate, ingest, features, train, evaluate, promote, rollback, score, pipeline, forecast,
                backtest, forecast_accuracy, serve):
    app.command()(readable_errors(command))

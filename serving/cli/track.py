"""The track record command: `leadscore forecast-accuracy` (how stored forecasts turned out)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from serving.cli.console import console, fmt
from serving.cli.output import CURRENCY_ENV, check_suffix, checked_currency, write_output

ACCURACY_FORMATS = (".json", ".html")

def forecast_accuracy(
    data: Path = typer.Option(..., "--data", help="Canonical tables folder (what was booked)."),
    out: Path = typer.Option(..., "--out", help="Output .json or .html."),
    freq: str = typer.Option("month", "--freq", help="month or quarter."),
    group_by: Optional[str] = typer.Option(None, "--group-by", help="The grouping column of the forecasts to check."),
    log: bool = typer.Option(True, "--log/--no-log", help="Log the metrics per horizon to MLflow."),
    currency: Optional[str] = typer.Option(None, "--currency", envvar=CURRENCY_ENV,
                                           help="Currency of the amounts in the HTML page (USD, EUR, ...)."),
) -> None:
    """Stored forecasts vs bookings of closed periods: first-forecast error, bias, +-5/15 % shares, P10-P90 hits."""
    from features.dataset import read_dataset
    from training.forecast.track_record import accuracy_report, log_accuracy
    from training.store.connection import open_store

    check_suffix(out, ACCURACY_FORMATS)
    currency = checked_currency(currency)
    dataset = read_dataset(data)
    store = open_store()
    try:
        report = accuracy_report(store, dataset, freq, group_by)
    finally:
        store.close()
    if log:
        report["run_id"] = log_accuracy(report, {"data_dir": data, "freq": freq, "group_by": group_by})
    if out.suffix.lower() == ".json":
        write_output(report, out)
    else:
        from training.forecast.html_report import accuracy_html

        write_output(accuracy_html(report, currency), out)
    print_accuracy_summary(report, out)


def print_accuracy_summary(report: dict, out: Path) -> None:
    from rich.table import Table

    from training.forecast.track_record import ACCURACY_METRICS as SHOWN

    table = Table(title=f"forecast accuracy ({report['freq']})")
    for col in ("group", "horizon", *SHOWN):
        table.add_column(col)
    for row in report["by_horizon"]:
        table.add_row(str(row["group_value"]), str(row["horizon"]), *[fmt(row.get(k)) for k in SHOWN])
    console.print(table)
    console.print(f"wrote {out}" + (f" (MLflow run {report['run_id']})" if report.get("run_id") else ""))

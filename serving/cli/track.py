"""The track record command: `leadscore forecast-accuracy` (how stored forecasts turned out)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from serving.cli.console import console, fmt
from serving.cli.output import check_suffix, write_output

ACCURACY_FORMATS = (".json", ".html")

def forecast_accuracy(
    data: Path = typer.Option(..., "--data", help="Canonical tables folder (what was booked)."),
    out: Path = typer.Option(..., "--out", help="Output .json or .html."),
    freq: str = typer.Option("month", "--freq", help="month or quarter."),
    group_by: Optional[str] = typer.Option(None, "--group-by", help="The grouping column of the forecasts to check."),
    log: bool = typer.Option(True, "--log/--no-log", help="Log the metrics per horizon to MLflow."),
) -> None:
    """Stored forecasts vs bookings of closed periods: first-forecast error, bias, +-5/15 % shares, P10-P90 hits."""
    from features.dataset import read_dataset
    from training.forecast.track_record import accuracy_report, log_accuracy
    from training.store.connection import open_store

    check_suffix(out, ACCURACY_FORMATS)
    dataset = read_dataset(data)
    store = open_store()
    try:
        report = accuracy_report(store, dataset, freq, group_by)
    finally:
        store.close()
    if log:
        report["run_id"] = log_accuracy(report, {"data_dir": data, "freq": freq, "group_by": group_by})
    write_output(report if out.suffix.lower() == ".json" else accuracy_html(report), out)
    print_accuracy_summary(report, out)


def accuracy_html(report: dict) -> str:
    """A self-contained page: the per-horizon table and the compared periods."""
    import html

    import pandas as pd

    def table(rows: list[dict]) -> str:
        return pd.DataFrame(rows).to_html(index=False, na_rep="-", float_format=lambda v: f"{v:,.2f}") if rows \
            else "<p>no stored forecast of a closed period yet</p>"

    title = html.escape(f"Forecast track record ({report['freq']}, {report['group_column'] or 'company total'})")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head><body>"
            f"<h1>{title}</h1><p>The first forecast made for each period and horizon (periods ahead) against what "
            f"was booked; bias &gt; 0 = over-forecast.</p><h2>By horizon</h2>{table(report['by_horizon'])}"
            f"<h2>Periods</h2>{table(report['periods'])}</body></html>")


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

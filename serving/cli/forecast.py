"""Forecast commands: `forecast` (bookings per period) and `backtest` (replayed past periods)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from serving.cli.console import console, fmt, progress_steps


def forecast(
    data: Path = typer.Option(..., "--data", help="Canonical tables folder."),
    out: Path = typer.Option(..., "--out", help="Output .csv, .json or .html (fan chart + risk list)."),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="Forecast from this date (default: data end)."),
    periods: int = typer.Option(3, "--periods", min=1, max=24, help="Number of periods."),
    freq: str = typer.Option("month", "--freq", help="month or quarter."),
    group_by: Optional[str] = typer.Option(None, "--group-by", help="owner, team, region, product, segment, ..."),
    targets: Optional[Path] = typer.Option(None, "--targets", exists=True, dir_okay=False,
                                           help="CSV: period[,group],target."),
    sims: int = typer.Option(2000, "--sims", min=100, help="Monte Carlo simulations."),
    seed: int = typer.Option(0, "--seed"),
    model_name: str = typer.Option("leadscore", "--model-name"),
    log: bool = typer.Option(True, "--log/--no-log", help="Log the forecast and its chart to MLflow."),
) -> None:
    """Bookings per period with P10/P50/P90: open pipeline + deals not yet created."""
    from training.forecast_report import forecast_command

    result = forecast_command(data, as_of, periods, freq, group_by, targets, out, model_name=model_name,
                              n_sims=sims, seed=seed, log_to_mlflow=log)
    print_forecast_summary(result)


def print_forecast_summary(result: dict) -> None:
    from rich.table import Table

    table = Table(title=f"forecast as of {result.get('as_of')} ({result.get('value_unit')})")
    for col in ("period", "expected", "open pipeline", "new deals", "P10", "P50", "P90"):
        table.add_column(col)
    from training.forecast import ALL

    for row in [r for r in result.get("forecast", []) if r.get("group") == ALL]:
        table.add_row(str(row.get("period")), *[_fmt_amount(row.get(k)) for k in
                                                ("expected", "open_pipeline", "new_deals", "p10", "p50", "p90")])
    console.print(table)
    for note in result.get("notes", []):
        console.print(f"[dim]{note}[/]")
    console.print(f"wrote {result.get('out')}" + (f" (MLflow run {result['run_id']})" if result.get("run_id") else ""))


def _fmt_amount(value) -> str:
    if value is None:
        return "-"
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:,.2f}{unit}"
    return f"{value:,.1f}"


def backtest(
    data: Path = typer.Option(..., "--data", help="Canonical tables folder."),
    out: Path = typer.Option(..., "--out", help="Output .json."),
    freq: str = typer.Option("month", "--freq", help="month or quarter."),
    origins: int = typer.Option(12, "--origins", min=1, max=60, help="Past period starts to replay."),
    sims: int = typer.Option(1000, "--sims", min=100, help="Monte Carlo simulations per forecast."),
    seed: int = typer.Option(0, "--seed"),
    log: bool = typer.Option(True, "--log/--no-log", help="Log the backtest and its chart to MLflow."),
) -> None:
    """Replay past period starts: model vs baselines (and the oracle on generated data)."""
    from training.forecast_report import backtest_command

    with progress_steps(total=origins + 2) as step:
        result = backtest_command(data, freq, origins, out, n_sims=sims, seed=seed, log_to_mlflow=log, step=step)
    print_backtest_summary(result, out)


def print_backtest_summary(result: dict, out: Path) -> None:
    from rich.table import Table

    summary = result.get("summary", {})
    table = Table(title=f"backtest: {len(result.get('origins', []))} origins")
    for col in ("forecast", "WAPE", "bias", "P10-P90 coverage"):
        table.add_column(col)
    rows = {"model": summary.get("model", {}), **{f"baseline: {k}": v for k, v in summary.get("baselines", {}).items()}}
    if summary.get("oracle"):
        rows["oracle"] = summary["oracle"]
    for name, m in rows.items():
        table.add_row(name, *[fmt(m.get(k)) for k in ("wape", "bias", "coverage_p10_p90")])
    console.print(table)
    console.print(f"wrote {out}")

"""Forecast commands: `forecast` (bookings per period) and `backtest` (replayed past periods)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from features.errors import LeadscoreError
from serving.cli.cluster import cluster_option, maybe_cluster
from serving.cli.console import console, fmt, progress_steps
from serving.cli.output import check_suffix, write_output

FORECAST_FORMATS = (".csv", ".json", ".html")


def forecast(
    data: Path = typer.Option(..., "--data", help="Canonical tables folder."),
    out: Path = typer.Option(..., "--out", help="Output .csv, .json or .html (fan chart + risk list)."),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="Forecast from this date (default: data end)."),
    periods: int = typer.Option(3, "--periods", min=1, max=24, help="Number of periods."),
    freq: str = typer.Option("month", "--freq", help="month or quarter."),
    group_by: Optional[str] = typer.Option(None, "--group-by", help="owner, team, region, product, segment, ..."),
    targets: Optional[Path] = typer.Option(None, "--targets", exists=True, dir_okay=False,
                                           help="CSV: period[,<group-by column>],target."),
    sims: int = typer.Option(2000, "--sims", min=100, help="Monte Carlo simulations."),
    seed: int = typer.Option(0, "--seed"),
    model_name: str = typer.Option("leadscore", "--model-name"),
    log: bool = typer.Option(True, "--log/--no-log", help="Log the forecast and its chart to MLflow."),
) -> None:
    """Bookings per period with P10/P50/P90: open pipeline + deals not yet created."""
    from features.dataset import read_dataset
    from training.forecast.config import ForecastConfig
    from training.forecast.outlook import outlook
    from training.forecast.report import forecast_dict, log_forecast
    from training.forecast.track_record import ForecastRecorder
    from training.registry import check_model_data, load_predictor

    check_suffix(out, FORECAST_FORMATS)
    dataset = read_dataset(data)
    predictor, version = load_predictor(model_name, check_model_data(model_name, None, dataset.meta, str(data)))
    result = outlook(predictor, dataset, dataset.data_end if as_of is None else as_of, periods, freq,
                     group_by=group_by, targets=read_targets(targets) if targets else None,
                     config=ForecastConfig(n_sims=sims, seed=seed))
    result.forecast.notes.append(f"model {model_name} v{version}")
    ForecastRecorder().record(result, model_name, version, dataset)  # the track record, before any output
    write_forecast(result, out)
    summary = {**forecast_dict(result), "out": str(out)}
    if log:
        summary["run_id"] = log_forecast(result, {"as_of": result.forecast.as_of, "periods": periods, "freq": freq,
                                                  "group_by": group_by, "model": f"{model_name}/{version}",
                                                  "n_sims": sims, "seed": seed, "data_dir": data})
    print_forecast_summary(summary)


def read_targets(path: Path):
    """Targets CSV as text: period (e.g. 2024-07 or 2024Q3), an optional group column named
    like --group-by (per-group targets; without it, company targets), target. Its contents
    are checked by `training.forecast.targets.checked_targets`, before any simulation."""
    import pandas as pd

    try:
        # every cell as text, and "NA" stays "NA" (a region), not a missing value
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise LeadscoreError(f"cannot read targets file {path}: {exc}") from None


def write_forecast(result, out: Path) -> Path:
    """By suffix: .csv (the table; the risk list beside it as <name>.risk.csv), .json, .html."""
    from training.forecast.report import forecast_dict, forecast_html, forecast_table

    if out.suffix.lower() == ".csv":
        write_output(forecast_table(result), out)
        write_output(result.risk, out.with_suffix(".risk.csv"))
    elif out.suffix.lower() == ".json":
        write_output(forecast_dict(result), out)
    else:
        write_output(forecast_html(result), out)
    return out


def print_forecast_summary(result: dict) -> None:
    from rich.table import Table

    table = Table(title=f"forecast as of {result.get('as_of')} ({result.get('value_unit')})")
    for col in ("period", "closed so far", "rest P50", "landing P10", "landing P50", "landing P90"):
        table.add_column(col)
    from training.forecast.newdeals import ALL

    for row in [r for r in result.get("forecast", []) if r.get("group") == ALL]:
        table.add_row(str(row.get("period")), *[_fmt_amount(row.get(k)) for k in
                                                ("closed_so_far", "p50", "landing_p10", "landing_p50", "landing_p90")])
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
    cluster=cluster_option(),
) -> None:
    """Replay past period starts: model vs baselines (and the oracle on generated data)."""
    from features.dataset import read_dataset
    from features.jsonsafe import json_safe
    from features.synthetic import load_truth
    from training.distributed import origin_mapper
    from training.forecast.backtest import backtest as run_backtest
    from training.forecast.config import ForecastConfig
    from training.forecast.report import log_backtest

    check_suffix(out, (".json",))
    dataset = read_dataset(data)
    truth = load_truth(data) if (data / "truth" / "truth.parquet").exists() else None  # generated: the oracle too
    with maybe_cluster(cluster) as client, progress_steps(total=origins + 2) as step:
        mapper = None if client is None else origin_mapper(client, dataset)
        result = json_safe(run_backtest(dataset, freq, origins, truth=truth, config=ForecastConfig(n_sims=sims, seed=seed),
                                         oracle_sims=300, step=step, map_origins=mapper))
    write_output(result, out)
    if log:
        result["run_id"] = log_backtest(result, {"freq": freq, "origins": origins, "n_sims": sims, "seed": seed,
                                                 "data_dir": data})
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

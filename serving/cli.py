"""`leadscore`: one typer app; each command is a thin wrapper over a package function.

User errors (bad data, bad mapping, bad option) print one line and exit 2; an
unexpected error prints one line too, with the traceback only under LEADSCORE_DEBUG=1.
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console

from features.errors import LeadscoreError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Predictive lead scoring and revenue forecasting.")
console = Console(stderr=True)


def readable_errors(fn: Callable) -> Callable:
    """Turn exceptions into a one-line message and a non-zero exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except (LeadscoreError, FileNotFoundError, ValueError, KeyError) as exc:
            if os.environ.get("LEADSCORE_DEBUG"):
                raise
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            console.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
            raise typer.Exit(2)
        except Exception as exc:  # noqa: BLE001 - last line of defence: no traceback for users
            if os.environ.get("LEADSCORE_DEBUG"):
                raise
            console.print(f"[bold red]internal error:[/] {type(exc).__name__}: {exc} "
                          f"(set LEADSCORE_DEBUG=1 for the traceback)", highlight=False, soft_wrap=True)
            raise typer.Exit(1)

    return wrapper


def parse_dates_option(value: str) -> list:
    """'2024-01-01,2024-02-01' -> timestamps, with a readable error."""
    import pandas as pd

    out = []
    for part in [p.strip() for p in value.split(",") if p.strip()]:
        try:
            out.append(pd.Timestamp(part))
        except (ValueError, TypeError):
            raise LeadscoreError(f"--as-of: '{part}' is not a date (use YYYY-MM-DD)") from None
    if not out:
        raise LeadscoreError("--as-of: give at least one date (YYYY-MM-DD[,YYYY-MM-DD...])")
    return out


@app.command()
@readable_errors
def generate(
    out: Path = typer.Option(..., "--out", help="Folder for the canonical tables (+ truth/)."),
    deals: int = typer.Option(20_000, "--deals", min=1, help="Number of deals to generate."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same data)."),
    start: str = typer.Option("2023-01-01", "--start", help="First creation date."),
    months: int = typer.Option(24, "--months", min=1, help="Months of history."),
) -> None:
    """Generate a realistic CRM history (deals, stage events, activities, accounts)."""
    from features.synthetic import generate as generate_dataset

    summary = generate_dataset(out_dir=out, n_deals=deals, seed=seed, start=start, months=months)
    console.print(summary)


@app.command()
@readable_errors
def ingest(
    mapping: Path = typer.Option(..., "--mapping", exists=True, dir_okay=False, help="YAML mapping file."),
    out: Path = typer.Option(..., "--out", help="Folder for the canonical tables and rejects.csv."),
) -> None:
    """Map a CRM export onto the canonical tables; bad rows go to rejects.csv."""
    from features.sources import ingest as ingest_export

    report = ingest_export(mapping_path=mapping, out_dir=out)
    console.print(report.summary())


@contextlib.contextmanager
def progress_steps(total: int):
    """A rich progress bar advanced by a `step(name)` callback."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as bar:
        task = bar.add_task("starting", total=total)
        started = [False]

        def step(name: str) -> None:  # a step is done when the next one starts
            bar.update(task, description=name, advance=1 if started[0] else 0)
            started[0] = True

        yield step
        bar.update(task, description="done", completed=total)


@app.command()
@readable_errors
def features(
    data: Path = typer.Option(..., "--data", help="Canonical tables folder."),
    as_of: str = typer.Option(..., "--as-of", help="As-of date(s): YYYY-MM-DD[,YYYY-MM-DD...]."),
    out: Path = typer.Option(..., "--out", help="Output .parquet (features + labels)."),
) -> None:
    """Point-in-time feature rows (and labels) for every deal open at each as-of date."""
    from features.build import features as build_features

    frame = build_features(data, parse_dates_option(as_of), out)
    console.print(f"{len(frame):,} snapshot rows x {frame.shape[1]} columns -> {out}")


@app.command()
@readable_errors
def train(
    data: Path = typer.Option(..., "--data", help="Canonical tables folder (or the target of --mapping)."),
    mapping: Optional[Path] = typer.Option(None, "--mapping", exists=True, dir_okay=False,
                                           help="Ingest this mapping into --data first."),
    experiment: str = typer.Option("leadscore", "--experiment", help="MLflow experiment name."),
    metrics_out: Optional[Path] = typer.Option(None, "--metrics-out", help="Write the metrics JSON here."),
    model_name: str = typer.Option("leadscore", "--model-name", help="Registered model name."),
) -> None:
    """Train, evaluate against the baselines, log to MLflow, register and gate."""
    from training.run import train as train_run

    with progress_steps(total=7) as step:
        summary = train_run(data, experiment=experiment, mapping=mapping, metrics_out=metrics_out,
                            model_name=model_name, step=step)
    print_train_summary(summary)


def print_train_summary(summary: dict) -> None:
    from rich.table import Table

    cp = summary["close_probability"]
    table = Table(title=f"close probability on the test fold ({cp.get('n', 0):,} rows)")
    for col in ("", "AUC", "Brier", "Brier skill", "ECE", "log loss"):
        table.add_column(col)
    rows = {"model": cp, **cp.get("baselines", {})}
    if "oracle" in cp:
        rows["oracle (truth)"] = cp["oracle"]
    for name, m in rows.items():
        table.add_row(name, *[_fmt(m.get(k)) for k in ("auc", "brier", "brier_skill", "ece", "log_loss")])
    console.print(table)
    if "at_creation" in cp and cp["at_creation"].get("n"):
        ac = cp["at_creation"]
        console.print(f"at creation: AUC {_fmt(ac.get('auc'))}, creation-time oracle AUC {_fmt(ac.get('oracle_auc'))}")
    if "time_to_close" in summary:
        t = summary["time_to_close"]
        console.print(f"time to close: MAE {_fmt(t.get('mae_days'))} days, P10-P90 coverage "
                      f"{_fmt(t.get('coverage_p10_p90'))}, concordance {_fmt(t.get('concordance'))}")
    for msg in summary.get("messages", []):
        console.print(f"[yellow]{msg}[/]")
    console.print(f"run {summary['run_id']}: {summary['model_name']} v{summary['model_version']} -> "
                  f"[bold]{summary['alias']}[/] ({summary['gate_reason']})", highlight=False)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


@app.command()
@readable_errors
def evaluate(
    data: Path = typer.Option(..., "--data", help="Canonical tables folder with outcomes."),
    version: Optional[int] = typer.Option(None, "--version", help="Registered version (default: champion)."),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="Score deals open at this date."),
    model_name: str = typer.Option("leadscore", "--model-name"),
    metrics_out: Optional[Path] = typer.Option(None, "--metrics-out"),
) -> None:
    """Re-score a registered version on new data and report its metrics."""
    import json

    from training.run import evaluate as evaluate_run

    out = evaluate_run(data, model_name=model_name, version=version, as_of=as_of, metrics_out=metrics_out)
    console.print_json(json.dumps(out, default=str))


@app.command()
@readable_errors
def promote(version: int = typer.Argument(..., help="Version to make champion."),
            model_name: str = typer.Option("leadscore", "--model-name")) -> None:
    """Move the `champion` alias to VERSION by hand."""
    from training.tracking import promote as promote_version

    promote_version(model_name, version)
    console.print(f"{model_name} v{version} is now champion")


@app.command()
@readable_errors
def rollback(model_name: str = typer.Option("leadscore", "--model-name")) -> None:
    """Move `champion` back to the previous champion."""
    from training.tracking import rollback as rollback_champion

    version = rollback_champion(model_name)
    console.print(f"{model_name}: champion rolled back to v{version}")


@app.command()
@readable_errors
def score(
    data: Path = typer.Option(..., "--data", help="Canonical tables folder."),
    out: Path = typer.Option(..., "--out", help="Output .csv, .json or .parquet."),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="Score deals open at this date (default: data end)."),
    explain: bool = typer.Option(True, "--explain/--no-explain", help="Include top factors."),
    model_name: str = typer.Option("leadscore", "--model-name"),
) -> None:
    """Score every open deal with the champion model."""
    from training.scoring import score as score_deals

    frame = score_deals(data, out, as_of=as_of, explain=explain, model_name=model_name)
    console.print(f"{len(frame):,} deals scored -> {out}")


@app.command()
@readable_errors
def pipeline(
    data: Path = typer.Option(..., "--data", help="Canonical tables folder."),
    out: Path = typer.Option(..., "--out", help="Output .json, .csv or .html."),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="As-of date (default: data end)."),
    group_by: Optional[str] = typer.Option(None, "--group-by", help="owner, team, region, product, source, segment."),
    target: Optional[float] = typer.Option(None, "--target", help="Bookings target of the current quarter."),
    stall_days: int = typer.Option(21, "--stall-days", min=1, help="Days without activity that count as stalled."),
    window_days: int = typer.Option(30, "--window-days", min=1, help="Window of the pipeline-changes waterfall."),
) -> None:
    """Pipeline analytics at an as-of date -> JSON, CSV or HTML (by the --out suffix)."""
    from features.analytics import pipeline as run_pipeline

    run_pipeline(data, as_of, group_by, out, target=target, stall_days_without_activity=stall_days,
                 window_days=window_days)
    console.print(f"wrote {out}")


@app.command()
@readable_errors
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
    from features.dataset import read_dataset
    from training.forecast.config import ForecastConfig
    from training.forecast.outlook import outlook
    from training.forecast.report import forecast_dict, log_forecast
    from training.scoring import load_predictor

    if out.suffix not in FORECAST_FORMATS:
        raise LeadscoreError(f"--out must end in one of {sorted(FORECAST_FORMATS)}, not '{out.suffix or out.name}'")
    dataset = read_dataset(data)
    predictor, version = load_predictor(model_name)
    result = outlook(predictor, dataset, dataset.data_end if as_of is None else as_of, periods, freq,
                     group_by=group_by, targets=read_targets(targets) if targets else None,
                     config=ForecastConfig(n_sims=sims, seed=seed))
    result.forecast.notes.append(f"model {model_name} v{version}")
    write_forecast(result, out)
    summary = {**forecast_dict(result), "out": str(out)}
    if log:
        summary["run_id"] = log_forecast(result, {"as_of": result.forecast.as_of, "periods": periods, "freq": freq,
                                                  "group_by": group_by, "model": f"{model_name}/{version}",
                                                  "n_sims": sims, "seed": seed, "data_dir": data})
    print_forecast_summary(summary)


FORECAST_FORMATS = {".csv", ".json", ".html"}


def read_targets(path: Path):
    """Targets CSV: period (e.g. 2024-07 or 2024Q3), optional group column, target."""
    import pandas as pd

    try:
        # every cell as text, and "NA" stays "NA" (a region), not a missing value
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise LeadscoreError(f"cannot read targets file {path}: {exc}") from None


def write_forecast(result, out: Path) -> Path:
    """Write by suffix: .csv (table; the risk list beside it as <name>.risk.csv), .json, .html."""
    import json

    from training.forecast.report import forecast_dict, forecast_html, forecast_table

    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        forecast_table(result).to_csv(out, index=False)
        result.risk.to_csv(out.with_suffix(".risk.csv"), index=False)
    elif out.suffix == ".json":
        out.write_text(json.dumps(forecast_dict(result), indent=1))
    else:
        out.write_text(forecast_html(result))
    return out


def print_forecast_summary(result: dict) -> None:
    from rich.table import Table

    table = Table(title=f"forecast as of {result.get('as_of')} ({result.get('value_unit')})")
    for col in ("period", "expected", "open pipeline", "new deals", "P10", "P50", "P90"):
        table.add_column(col)
    from training.forecast.newdeals import ALL

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


@app.command()
@readable_errors
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
    import json

    from features.analytics.metrics import clean_json
    from features.dataset import read_dataset
    from training.forecast.backtest import backtest as run_backtest
    from training.forecast.config import ForecastConfig
    from training.forecast.report import log_backtest

    if out.suffix != ".json":
        raise LeadscoreError(f"--out must be a .json file, not '{out.name}'")
    dataset = read_dataset(data)
    truth = None
    if (data / "truth" / "truth.parquet").exists():  # generated data: the oracle forecast too
        from features.synthetic import load_truth

        truth = load_truth(data)
    with progress_steps(total=origins + 2) as step:
        result = clean_json(run_backtest(dataset, freq, origins, truth=truth,
                                         config=ForecastConfig(n_sims=sims, seed=seed), oracle_sims=300, step=step))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
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
        table.add_row(name, *[_fmt(m.get(k)) for k in ("wape", "bias", "coverage_p10_p90")])
    console.print(table)
    console.print(f"wrote {out}")


@app.command()
@readable_errors
def serve(
    port: int = typer.Option(3000, "--port", min=1, max=65535, help="Port to listen on."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (0.0.0.0 for all)."),
) -> None:
    """Serve the champion over HTTP with BentoML (/score, /forecast, /pipeline)."""
    from serving.server import serve as serve_http

    raise typer.Exit(serve_http(port, host))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())

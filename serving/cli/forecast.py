"""Forecast commands: `forecast` (bookings per period) and `backtest` (replayed past periods)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import typer

from features.errors import LeadscoreError
from serving.cli.cluster import cluster_option, maybe_cluster
from serving.cli.console import console, fmt, progress_steps
from serving.cli.models import pandas_frequency
from serving.cli.output import CURRENCY_ENV, check_suffix, checked_currency, write_output
from serving.cli.side_process import SideProcess, import_modules, side_process
from training.registry import RegisteredVersion, find_version

if TYPE_CHECKING:
    import pandas as pd

FORECAST_FORMATS = (".csv", ".json", ".html")


def forecast(
    data: Path = typer.Option(..., "--data", help="Canonical tables folder."),
    out: Path = typer.Option(..., "--out", help="Output .csv, .json or .html (the report for finance; the full "
                                                "risk list beside it as <name>.risk.csv)."),
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
    currency: Optional[str] = typer.Option(None, "--currency", envvar=CURRENCY_ENV,
                                           help="Currency of the amounts in the HTML report (ISO code: USD, EUR, "
                                                "GBP, CHF, ...; default: plain numbers)."),
) -> None:
    """Bookings per period with P10/P50/P90: open pipeline + deals not yet created."""
    check_suffix(out, FORECAST_FORMATS)
    currency = checked_currency(currency)
    goals = read_targets(targets) if targets else None
    with side_process() as side:  # MLflow starts in the side process while the data and the forecast load here
        found = side.submit(find_version, model_name)
        summary = run_forecast(side, found, data, out, as_of, periods, freq, group_by, goals, sims, seed, model_name,
                               log, currency)
    print_forecast_summary(summary)


def run_forecast(side: SideProcess, found: Callable[[], RegisteredVersion], data: Path, out: Path,
                 as_of: str | None, periods: int, freq: str, group_by: str | None, goals: pd.DataFrame | None,
                 sims: int, seed: int, model_name: str, log: bool, currency: str | None) -> dict:
    """The forecast command's steps; `found()` is the registry's answer (`find_version`) from
    the side process, which also logs the MLflow run. Returns the forecast JSON + out, run_id."""
    from features.dataset import read_dataset
    from training.forecast.config import ForecastConfig
    from training.forecast.newdeals import ALL
    from training.forecast.outlook import OUTLOOK_STEPS, outlook
    from training.forecast.report import forecast_dict
    from training.forecast.run_log import log_forecast
    from training.forecast.track_record import ForecastRecorder

    with progress_steps(total=OUTLOOK_STEPS + 4 + log) as step:
        step("reading the data")
        dataset = read_dataset(data)
        check_options(dataset, dataset.data_end if as_of is None else as_of, periods, freq, group_by, goals)
        step("loading the model")
        registered = found()
        registered.check_data(dataset.meta, str(data))
        if log:
            side.submit(prepare_side)  # while the forecast runs here
        predictor, version = registered.load(), registered.version
        result = outlook(predictor, dataset, dataset.data_end if as_of is None else as_of, periods, freq,
                         group_by=group_by, targets=goals, config=ForecastConfig(n_sims=sims, seed=seed), step=step)
        result.forecast.notes.append(f"model {model_name} v{version}")
        step("storing the forecast in the track record")
        ForecastRecorder().record(result, model_name, version, dataset)  # the track record, before any output
        step(f"writing {out.name}")
        doc = forecast_dict(result)
        write_forecast(result, out, dataset, currency, doc)
        summary = {**doc, "out": str(out)}
        if log:
            step("logging to MLflow")
            summary["run_id"] = side.submit(log_forecast, doc, {
                "as_of": result.forecast.as_of, "periods": periods, "freq": freq, "group_by": group_by,
                "model": f"{model_name}/{version}", "n_sims": sims, "seed": seed, "data_dir": data}, ALL)()
    return summary


def prepare_side() -> None:
    """In the side process, while the forecast runs: load the forecast's run logger and
    MLflow's run context, so that logging the run starts at once."""
    from training.tracking import warm_run_context

    import_modules("training.forecast.run_log")
    warm_run_context()


def check_options(dataset, as_of, periods: int, freq: str, group_by: str | None, targets) -> None:
    """The checks `outlook` starts with (as-of date, periods, grouping column, targets against
    them), made before the model is loaded: a bad option or targets file is a one-line error
    (exit 2) within the first second, not after MLflow and the model have loaded."""
    from training.forecast.periods import check_as_of, make_periods
    from training.forecast.prepared import check_group
    from training.forecast.targets import checked_targets

    per = make_periods(check_as_of(dataset, as_of), periods, freq)
    check_group(dataset, group_by)
    if targets is not None:
        checked_targets(targets, per, freq, group_by, dataset.deals[group_by] if group_by else None)


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


def write_forecast(result, out: Path, dataset=None, currency: str | None = None, doc: dict | None = None) -> Path:
    """By suffix: .csv (the table), .json (`doc`, the forecast JSON when already made), .html
    (the report for finance, with what changed since the previous stored forecast and the
    track record when the store can be read); with .csv and .html the risk list ranked by
    value at risk goes beside as <name>.risk.csv."""
    from training.forecast.briefing import ranked_risk
    from training.forecast.report import forecast_dict, forecast_table

    suffix = out.suffix.lower()
    if suffix == ".json":
        write_output(forecast_dict(result) if doc is None else doc, out)
        return out
    if suffix == ".csv":
        write_output(forecast_table(result), out)
    else:
        write_output(forecast_page(result, dataset, currency), out)
    write_output(ranked_risk(result), out.with_suffix(".risk.csv"))
    return out


def forecast_page(result, dataset, currency: str | None) -> str:
    """The HTML report; the store (track record, previous forecast) is optional: when it
    cannot be opened the page says so."""
    from training.forecast.briefing import STORE_ERRORS, briefing
    from training.forecast.html_report import forecast_html
    from training.store.connection import open_store

    store, note = None, None
    try:
        store = open_store()
    except STORE_ERRORS as exc:
        note = f"the track-record store is unavailable: {str(exc).splitlines()[0][:300]}"
    try:
        return forecast_html(briefing(result, result.forecast.known if dataset is None else dataset, store, currency, note))
    finally:
        if store is not None:
            store.close()


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
    stale = result.get("stale_pipeline") or {}
    if stale.get("stale_open_count"):
        counted = result.get("value_unit") == "won deals"  # no amounts: a value would only repeat the count
        value = "" if counted else f", value {_fmt_amount(stale['stale_open_value'])}"
        console.print(f"stale pipeline: {stale['stale_open_count']:,} of {stale['open_count']:,} open deals{value}, "
                      f"expected {'won deals' if counted else 'bookings'} from them "
                      f"{_fmt_amount(stale['stale_expected_bookings'])} (included above)")
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
    gap_days: int = typer.Option(45, "--gap-days", min=0, help="Days between the training time folds (a short "
                                 "export gets fewer folds or shorter gaps, stated in each origin's messages)."),
    snapshot_freq: str = typer.Option("W-MON", "--snapshot-freq", callback=pandas_frequency,
                                      help="As-of dates of the training snapshots (pandas frequency: W-MON, D, MS)."),
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
    from training.train import TrainConfig

    check_suffix(out, (".json",))
    dataset = read_dataset(data)
    truth = load_truth(data) if (data / "truth" / "truth.parquet").exists() else None  # generated: the oracle too
    with maybe_cluster(cluster) as client, progress_steps(total=origins + 2) as step:
        mapper = None if client is None else origin_mapper(client, dataset)
        result = json_safe(run_backtest(dataset, freq, origins, truth=truth,
                                         train_config=TrainConfig(gap_days=gap_days, snapshot_freq=snapshot_freq),
                                         config=ForecastConfig(n_sims=sims, seed=seed), oracle_sims=300, step=step,
                                         map_origins=mapper))
    write_output(result, out)
    if log:
        result["run_id"] = log_backtest(result, {"freq": freq, "origins": origins, "n_sims": sims, "seed": seed,
                                                 "gap_days": gap_days, "snapshot_freq": snapshot_freq,
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
    for row in result.get("rows", []):
        if row.get("model_cold_start") or row.get("model_note"):
            said = row.get("model_note") or f"{row.get('model_kind')} trained at {row.get('model_trained_at')}"
            console.print(f"[dim]origin {str(row.get('origin'))[:10]}: cold start ({said})[/]")
    console.print(f"wrote {out}")

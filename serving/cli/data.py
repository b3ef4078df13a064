"""Commands on data: generate a history, ingest an export, feature rows, pipeline analytics."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd
import typer

from features.dates import as_of_timestamps
from serving.cli.cluster import cluster_option, maybe_cluster
from serving.cli.console import console
from serving.cli.output import CURRENCY_ENV, FRAME_SUFFIXES, check_suffix, checked_currency, write_output

PIPELINE_SUFFIXES = (".json", ".csv", ".html", ".htm")


def generate(
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the canonical tables (+ truth/)."),
    deals: int = typer.Option(20_000, "--deals", min=1, help="Number of deals to generate."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same data)."),
    start: str = typer.Option("2023-01-01", "--start", help="First creation date."),
    months: int = typer.Option(24, "--months", min=1, help="Months of history."),
    export: Optional[Path] = typer.Option(None, "--export", help="Folder for a raw, dirty CRM export of the "
                                          "same history (star schema CSVs + mapping.yaml + truth/)."),
    zombie_share: float = typer.Option(0.9, "--zombie-share", min=0.0, max=0.99,
                                       help="With --export: share of the open pipeline that is zombies."),
    regime_change: Optional[str] = typer.Option(None, "--regime-change", help="Deals created from this date "
                                                "(YYYY-MM-DD) live in a changed world (see the --regime-* knobs)."),
    regime_win_shift: str = typer.Option("outbound=-1.0,inbound=-0.5", "--regime-win-shift",
                                         help="With --regime-change: win-logit shift per source."),
    regime_amount_factor: float = typer.Option(1.4, "--regime-amount-factor", help="Deal sizes x this."),
    regime_new_product_share: float = typer.Option(0.25, "--regime-new-product-share",
                                                   help="Share of new deals in a new product line."),
    regime_slow_stage: str = typer.Option("proposal=1.8", "--regime-slow-stage",
                                          help="Mean dwell factor per stage."),
    partitions: Optional[int] = typer.Option(None, "--partitions", min=1,
                                             help="Write --out as this many hash partitions of deal_id, "
                                                  "generated in chunks (other data than without it)."),
) -> None:
    """Generate a realistic CRM history (deals, stage events, activities, accounts), and/or
    the same history as a dirty raw CRM export with its mapping (--export)."""
    from features.synthetic import generate as generate_dataset
    from features.synthetic.export import export_dirty
    from features.synthetic.generator import GeneratorOptionError

    if out is None and export is None:
        raise GeneratorOptionError("give --out (canonical tables), --export (a raw CRM export) or both")
    if partitions is not None and (out is None or export is not None or regime_change is not None):
        raise GeneratorOptionError("--partitions needs --out and goes without --export and --regime-change")
    regime = None
    if regime_change is not None:
        from features.synthetic.regime import RegimeChange, pairs

        if export is not None:
            raise GeneratorOptionError("--regime-change applies to --out only, not to --export")
        regime = RegimeChange(regime_change, win_shift=pairs(regime_win_shift, "--regime-win-shift"),
                              amount_factor=regime_amount_factor, new_product_share=regime_new_product_share,
                              stage_slowdown=pairs(regime_slow_stage, "--regime-slow-stage"))
    if partitions is not None:
        from features.synthetic.chunked import generate_partitioned

        console.print(generate_partitioned(out, deals, partitions, seed=seed, start=start, months=months))
    elif out is not None:
        console.print(generate_dataset(out_dir=out, n_deals=deals, seed=seed, start=start, months=months,
                                       regime=regime))
    if export is not None:
        console.print(export_dirty(export, n_deals=deals, seed=seed, start=start, months=months,
                                   zombie_share=zombie_share))


def ingest(
    mapping: Path = typer.Option(..., "--mapping", exists=True, dir_okay=False, help="YAML mapping file."),
    out: Path = typer.Option(..., "--out", help="Folder for the canonical tables and rejects.csv."),
    append: bool = typer.Option(False, "--append", help="Add this later export of the same CRM to the "
                                "dataset already in --out (new deals, stage changes, closes)."),
    exported_at: Optional[str] = typer.Option(None, "--exported-at", help="When the export was taken "
                                              "(YYYY-MM-DD; default: the mapping's exported_at, else the data end)."),
) -> None:
    """Map a CRM export onto the canonical tables; bad rows go to rejects.csv."""
    from features.sources import ingest as ingest_export

    report = ingest_export(mapping_path=mapping, out_dir=out, append=append, exported_at=exported_at)
    console.print(report.summary())


def parse_dates_option(value: str) -> list[pd.Timestamp]:
    """'2024-01-01,2024-02-01' -> timestamps, with a one-line error naming --as-of."""
    return list(as_of_timestamps([p for p in value.split(",") if p.strip()], "--as-of"))


def features(
    data: Path = typer.Option(..., "--data", help="Canonical tables folder."),
    as_of: str = typer.Option(..., "--as-of", help="As-of date(s): YYYY-MM-DD[,YYYY-MM-DD...]."),
    out: Path = typer.Option(..., "--out", help="Output .parquet, .csv or .json (features + labels)."),
    cluster=cluster_option(),
) -> None:
    """Point-in-time feature rows (and labels) for every deal open at each as-of date.
    With --cluster and a .parquet --out, the workers write it as a Parquet dataset folder."""
    from features.build import features as feature_rows
    from features.dataset import read_dataset

    dates = parse_dates_option(as_of)
    suffix = check_suffix(out, FRAME_SUFFIXES)
    with maybe_cluster(cluster) as client:
        if client is None:
            frame = feature_rows(read_dataset(data), dates)
        elif suffix == ".parquet":
            from training.distributed import write_features

            written = write_features(client, data, dates, out)
            console.print(f"{written['rows']:,} snapshot rows in {written['files']} files -> {out}/ "
                          f"(a Parquet dataset: pandas.read_parquet reads it as one table)")
            return
        else:
            from training.distributed import features as cluster_rows

            frame = cluster_rows(client, data, dates, out.with_name(f".{out.name}.parts"))
    write_output(frame, out)
    console.print(f"{len(frame):,} snapshot rows x {frame.shape[1]} columns -> {out}")


def pipeline(
    data: Path = typer.Option(..., "--data", help="Canonical tables folder."),
    out: Path = typer.Option(..., "--out", help="Output .json, .csv or .html."),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="As-of date (default: data end)."),
    group_by: Optional[str] = typer.Option(None, "--group-by", help="owner, team, region, product, source, segment."),
    target: Optional[float] = typer.Option(None, "--target", help="Bookings target of the current quarter."),
    stall_days: int = typer.Option(21, "--stall-days", min=1, help="Days without activity that count as stalled."),
    window_days: int = typer.Option(30, "--window-days", min=1, help="Window of the pipeline-changes waterfall."),
    currency: Optional[str] = typer.Option(None, "--currency", envvar=CURRENCY_ENV,
                                           help="Currency of the amounts in the HTML report (USD, EUR, ...)."),
) -> None:
    """Pipeline analytics at an as-of date -> JSON, CSV or HTML (by the --out suffix)."""
    from features.analytics import pipeline_metrics
    from features.dataset import read_dataset

    suffix = check_suffix(out, PIPELINE_SUFFIXES)
    currency = checked_currency(currency)
    metrics = pipeline_metrics(read_dataset(data), as_of, group_by=group_by, target=target,
                               stall_days_without_activity=stall_days, window_days=window_days)
    write_output(pipeline_report(metrics, suffix, currency), out)
    console.print(f"wrote {out}")


def pipeline_report(metrics: dict, suffix: str, currency: str | None = None) -> dict | pd.DataFrame | str:
    """What a pipeline file holds: the metrics (.json), their long table (.csv) or the HTML page."""
    if suffix == ".csv":
        from features.analytics import metrics_table

        return metrics_table(metrics)
    if suffix in (".html", ".htm"):
        from features.report import render_html

        return render_html(metrics, currency)
    return metrics

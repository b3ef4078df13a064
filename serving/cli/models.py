"""Commands on models: train, evaluate, promote, rollback, score."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from serving.cli.cluster import cluster_option, maybe_cluster
from serving.cli.console import console, fmt, progress_steps
from serving.cli.output import FRAME_SUFFIXES, check_suffix, write_output
from serving.cli.side_process import import_modules, side_process
from training.cluster import TRAINING_ROWS_MAX, ClusterError
from training.registry import find_version

TRAIN_STEPS = 7
EVALUATE_STEPS = 4
SCORE_STEPS = 4


def pandas_frequency(freq: str) -> str:
    """Option callback: `freq` if pandas knows it as a frequency, else a usage error."""
    from pandas.tseries.frequencies import to_offset

    try:
        to_offset(freq)
    except ValueError:
        raise typer.BadParameter(f"{freq!r} is not a pandas frequency (e.g. W-MON, D, MS)") from None
    return freq


def train(
    data: Path = typer.Option(..., "--data", help="Canonical tables folder (or the target of --mapping)."),
    mapping: Optional[Path] = typer.Option(None, "--mapping", exists=True, dir_okay=False,
                                           help="Ingest this mapping into --data first."),
    experiment: str = typer.Option("leadscore", "--experiment", help="MLflow experiment name."),
    metrics_out: Optional[Path] = typer.Option(None, "--metrics-out", help="Write the metrics JSON here."),
    model_name: str = typer.Option("leadscore", "--model-name", help="Registered model name."),
    new_dataset: bool = typer.Option(False, "--new-dataset",
                                     help="Allow training another dataset (other stages or attributes) into "
                                          "an existing --model-name."),
    keep_column: list[str] = typer.Option([], "--keep-column",
                                          help="Keep this suspected leak in the model (repeatable)."),
    leak_auc: Optional[float] = typer.Option(None, "--leak-auc", min=0.5, max=1.0,
                                             help="Single-column AUC from which a column is taken for a leak "
                                                  "(default: features.leakage.LEAK_AUC, 0.97)."),
    gap_days: int = typer.Option(45, "--gap-days", min=0,
                                 help="Days between time folds (shortened on a short export, which says so)."),
    snapshot_freq: str = typer.Option("W-MON", "--snapshot-freq", callback=pandas_frequency,
                                      help="As-of dates of the training snapshots (pandas frequency: W-MON, D, MS)."),
    cluster=cluster_option(),
    distributed_fit: bool = typer.Option(False, "--distributed-fit", help="With --cluster: fit the close-probability "
                                         "booster data-parallel with lightgbm.dask."),
    max_training_rows: Optional[int] = typer.Option(
        None, "--max-training-rows", min=1000, help=f"With --cluster: snapshot rows brought to this process to train "
        f"(default {TRAINING_ROWS_MAX:,}, ~470 bytes a row); past it, a hash sample of the deals."),
) -> None:
    """Train, evaluate against the baselines, log to MLflow, register and gate."""
    if distributed_fit and cluster is None:
        raise ClusterError("--distributed-fit needs --cluster (or $LEADSCORE_DASK_SCHEDULER)")
    if max_training_rows is not None and cluster is None:
        raise ClusterError("--max-training-rows needs --cluster (without it every snapshot row trains, in pandas)")
    from features.dataset import read_dataset, read_truth
    from training.run import train as train_model
    from training.train import TrainConfig

    config = TrainConfig(gap_days=gap_days, snapshot_freq=snapshot_freq, keep_columns=tuple(keep_column),
                         **({} if leak_auc is None else {"leak_auc": leak_auc}))

    with maybe_cluster(cluster) as client, progress_steps(total=TRAIN_STEPS + (cluster is not None)) as step:
        if mapping is not None:
            from features.sources import ingest

            step("ingest")
            ingest(mapping_path=mapping, out_dir=data)
        if client is None:
            dataset, truth, whole = read_dataset(data), read_truth(data), {}
        else:  # the whole dataset stays on the workers: only the deals that train come here
            from training.distributed_sample import cluster_inputs

            step("deal sample")
            dataset, truth, whole = cluster_inputs(client, data, config, max_training_rows or TRAINING_ROWS_MAX,
                                                   distributed_fit)
        summary = train_model(dataset, truth, experiment=experiment, model_name=model_name, config=config,
                              step=step, data_dir=data, new_dataset=new_dataset, **whole)
    if metrics_out is not None:
        write_output(summary, metrics_out)
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
        table.add_row(name, *[fmt(m.get(k)) for k in ("auc", "brier", "brier_skill", "ece", "log_loss")])
    console.print(table)
    if "at_creation" in cp and cp["at_creation"].get("n"):
        ac = cp["at_creation"]
        console.print(f"at creation: AUC {fmt(ac.get('auc'))}, creation-time oracle AUC {fmt(ac.get('oracle_auc'))}")
    if "time_to_close" in summary:
        t = summary["time_to_close"]
        console.print(f"time to close: MAE {fmt(t.get('mae_days'))} days, P10-P90 coverage "
                      f"{fmt(t.get('coverage_p10_p90'))}, concordance {fmt(t.get('concordance'))}")
    for msg in summary.get("messages", []):
        console.print(f"[yellow]{msg}[/]")
    console.print(f"run {summary['run_id']}: {summary['model_name']} v{summary['model_version']} -> "
                  f"[bold]{summary['alias']}[/] ({summary['gate_reason']})", highlight=False)


def evaluate(
    data: Path = typer.Option(..., "--data", help="Canonical tables folder with outcomes."),
    version: Optional[int] = typer.Option(None, "--version", help="Registered version (default: champion)."),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="Score deals open at this date."),
    model_name: str = typer.Option("leadscore", "--model-name"),
    metrics_out: Optional[Path] = typer.Option(None, "--metrics-out"),
) -> None:
    """Re-score a registered version on new data and report its metrics."""
    from features.dataset import read_dataset
    from training.registry import check_model_data
    from training.run import evaluate as evaluate_model

    with progress_steps(total=EVALUATE_STEPS) as step:
        step("read data")
        dataset = read_dataset(data)
        step("check the model against the data")
        version = check_model_data(model_name, version, dataset.meta, str(data))
        step("score and measure")
        out = evaluate_model(dataset, model_name=model_name, version=version, as_of=as_of)
        if metrics_out is not None:
            step("write metrics")
            write_output(out, metrics_out)
    console.print_json(json.dumps(out, default=str))


def promote(version: int = typer.Argument(..., help="Version to make champion."),
            model_name: str = typer.Option("leadscore", "--model-name"),
            force: bool = typer.Option(False, "--force", help="Promote a version that has not passed the gate "
                                                              "or was trained on another dataset (recorded).")) -> None:
    """Move the `champion` alias to VERSION by hand (logged with who it replaced)."""
    from training.registry import promote as promote_version

    promote_version(model_name, version, force=force)
    console.print(f"{model_name} v{version} is now champion" + (" (forced)" if force else ""))


def rollback(model_name: str = typer.Option("leadscore", "--model-name")) -> None:
    """Move `champion` back to the previous champion."""
    from training.registry import rollback as rollback_champion

    version = rollback_champion(model_name)
    console.print(f"{model_name}: champion rolled back to v{version}")


def score(
    data: Path = typer.Option(..., "--data", help="Canonical tables folder."),
    out: Path = typer.Option(..., "--out", help="Output .csv, .json or .parquet."),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="Score deals open at this date (default: data end)."),
    explain: bool = typer.Option(True, "--explain/--no-explain", help="Include top factors."),
    model_name: str = typer.Option("leadscore", "--model-name"),
    cluster=cluster_option(),
) -> None:
    """Score every open deal with the champion model: best score first, with stage, amount,
    owner, what the score rests on (`basis`) and the reasons in words (`reason_1..3`,
    `risk_1..3`); a CSV is rounded for a CRM import, Parquet and JSON keep `top_factors`."""
    from features.dataset import read_dataset, read_partition
    from training.scoring import csv_table, trend_and_log
    from training.scoring import score as score_deals

    suffix = check_suffix(out, FRAME_SUFFIXES)
    with side_process() as side:  # MLflow starts in the side process while the data and the model's code load here
        found = side.submit(find_version, model_name)
        with maybe_cluster(cluster) as client, progress_steps(total=SCORE_STEPS) as step:
            step("read data")
            dataset = read_dataset(data) if client is None else read_partition(data, 0)  # cluster: workers read
            step("check the model against the data")
            registered = found()
            registered.check_data(dataset.meta, str(data))
            side.submit(import_modules, "training.scoring", "training.monitoring.trend")  # the score log's, meanwhile
            step("score open deals")
            frame = score_deals(dataset, as_of=as_of, explain=explain, model_name=model_name,
                                version=registered.version, client=client, data_dir=data,
                                predictor=registered.load())
            step("write scores")
            frame, logged = side.submit(trend_and_log, frame, model_name, registered.version)()  # the score log
            write_output(csv_table(frame) if suffix == ".csv" else frame, out)
    console.print(f"{len(frame):,} deals scored -> {out} ({logged})")

"""The retraining command: `leadscore retrain` (for cron; exit codes in training/retrain.py)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer

from serving.cli.console import console, progress_steps

RETRAIN_STEPS = 8


def retrain(
    mapping: Path = typer.Option(..., "--mapping", exists=True, dir_okay=False, help="YAML mapping of the export."),
    data: Path = typer.Option(..., "--data", help="Canonical tables folder (continued when it exists)."),
    model_name: str = typer.Option("leadscore", "--model-name", help="Registered model name."),
    experiment: str = typer.Option("leadscore", "--experiment", help="MLflow experiment name."),
    bento: bool = typer.Option(False, "--bento", help="After a promotion, rebuild the Bento "
                               "(`python -m serving.loader export` + `bentoml build`)."),
) -> None:
    """Ingest the latest export, train, gate (and rebuild the Bento); exit 0 promoted or
    unchanged, 3 refused by the gate (the champion keeps serving), 4 another retrain is
    running, 2 bad input."""
    from training.retrain import retrain as run_retrain

    with progress_steps(total=RETRAIN_STEPS) as step:
        result = run_retrain(mapping, data, model_name=model_name, experiment=experiment, step=step)
    console.print(result.message, highlight=False, soft_wrap=True)
    if bento and result.status == "promoted":
        rebuild_bento(model_name)
    raise typer.Exit(result.exit_code)


def rebuild_bento(model_name: str) -> None:
    """What `make bento` runs: the champion into BentoML's model store, then `bentoml build`."""
    from serving.server import PROJECT_ROOT

    for command in ([sys.executable, "-m", "serving.loader", "export", model_name],
                    [str(Path(sys.executable).with_name("bentoml")), "build", "--output", "tag"]):
        done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"`{' '.join(command[-3:])}` failed (exit {done.returncode}): {last[0]}")
        console.print(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "done", highlight=False)

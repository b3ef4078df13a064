"""The model's life after deployment: `leadscore monitor` (live accuracy and drift) and
`leadscore forget` (a customer's data erased everywhere it went, audited)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from serving.cli.console import console
from serving.cli.output import check_suffix, write_output

MONITOR_FORMATS = (".json", ".html")


def monitor(
    data: Path = typer.Option(..., "--data", help="Canonical tables folder (the outcomes known so far)."),
    out: Path = typer.Option(..., "--out", help="Output .json or .html."),
    model_name: str = typer.Option("leadscore", "--model-name"),
    window_days: int = typer.Option(28, "--window-days", min=1, help="Drift: scores of the last N days of the log."),
    psi_warn: float = typer.Option(0.1, "--psi-warn", min=0.0, help="PSI from which a shift warns."),
    psi_alert: float = typer.Option(0.25, "--psi-alert", min=0.0, help="PSI from which a shift alerts."),
    brier_tolerance: float = typer.Option(0.2, "--brier-tolerance", min=0.0,
                                          help="Alert when the realised Brier exceeds the test fold's by this share."),
    ece_tolerance: float = typer.Option(0.015, "--ece-tolerance", min=0.0,
                                        help="Warn when the realised ECE exceeds the test fold's (or the expected) "
                                             "by this much."),
    min_outcomes: int = typer.Option(200, "--min-outcomes", min=1, help="Fewer closed scores: not judged."),
    maturity_days: int = typer.Option(90, "--maturity-days", min=0,
                                      help="Realised figures from scores at least this old."),
    log: bool = typer.Option(True, "--log/--no-log", help="Log the metrics to MLflow under the model version."),
) -> None:
    """Logged scores vs outcomes (reliability, ECE, Brier, AUC beside the test fold and the
    expectation), feature and score drift (PSI); exit status 0 ok, 1 warn or alert, 2 bad input."""
    from features.dataset import read_dataset
    from features.errors import LeadscoreError
    from training.monitoring.drift import DriftThresholds
    from training.monitoring.monitor import MonitorConfig, log_monitor, monitor_now

    check_suffix(out, MONITOR_FORMATS)
    if psi_warn > psi_alert:
        raise LeadscoreError(f"--psi-warn ({psi_warn}) is above --psi-alert ({psi_alert})")
    dataset = read_dataset(data)
    config = MonitorConfig(model_name=model_name, window_days=window_days,
                           drift=DriftThresholds(warn=psi_warn, alert=psi_alert), brier_tolerance=brier_tolerance,
                           min_outcomes=min_outcomes, maturity_days=maturity_days, ece_tolerance=ece_tolerance)
    report = monitor_now(dataset, config)
    if log:
        report["run_id"] = log_monitor(report)
    write_output(report if out.suffix.lower() == ".json" else monitor_html(report), out)
    console.print(report["verdict"]["line"], highlight=False, soft_wrap=True)
    console.print(f"wrote {out}" + (f" (MLflow run {report['run_id']})" if report.get("run_id") else ""))
    raise typer.Exit(report["verdict"]["exit_status"])


def monitor_html(report: dict) -> str:
    """A self-contained page: verdict, performance per version, recent and weekly drift."""
    import html

    import pandas as pd

    def table(rows: list[dict]) -> str:
        return pd.DataFrame(rows).to_html(index=False, na_rep="-", float_format=lambda v: f"{v:,.4f}") if rows \
            else "<p>nothing to show</p>"

    perf = [{"version": v, "scores": p["scores"], "mature pending share": p["mature_pending_share"],
             **{f"realised {k}": p["realised"][k] for k in ("n", "brier", "ece", "auc")},
             **{f"expected {k}": p["expected_closed"][k] for k in ("brier", "ece")},
             **{f"test fold {k}": p["test_fold"].get(k) for k in ("brier", "ece", "auc")}}
            for v, p in report["performance"].items()]
    drift = report["drift"]
    title = html.escape(f"Model monitor: {report['model_name']}")
    parts = [f"<h1>{title}</h1><p><b>{html.escape(report['verdict']['line'])}</b></p>",
             "<h2>Live performance</h2>", table(perf)]
    for version, p in report["performance"].items():
        parts += [f"<h3>v{html.escape(version)}: reliability</h3>", table(p["realised"]["reliability"]),
                  "<h3>by segment</h3>", table(p["by_segment"]), "<h3>by score decile</h3>", table(p["by_decile"])]
    parts += [f"<h2>Drift (v{html.escape(str(drift['model_version']))}, last {drift.get('window_days', '-')} days)"
              "</h2>", table(drift.get("recent", [])), "<h2>Drift by week</h2>", table(drift.get("by_week", []))]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head><body>"
            + "".join(parts) + "</body></html>")


def forget(
    data: Path = typer.Option(..., "--data", help="Canonical tables folder (rewritten without the subject)."),
    account_id: Optional[str] = typer.Option(None, "--account-id", help="The account to forget (all its deals)."),
    deal_id: Optional[List[str]] = typer.Option(None, "--deal-id", help="A deal to forget (repeatable)."),
    model_name: str = typer.Option("leadscore", "--model-name"),
    retrain: bool = typer.Option(False, "--retrain", help="Then train a new version on the cleaned data."),
) -> None:
    """Erase an account's or some deals' rows from the canonical tables, the score log and the
    forecast store (audited: counts, never ids), and name the model versions trained on them."""
    from training.forget import forget as forget_subject

    done = forget_subject(data, deal_ids=deal_id or (), account_id=account_id, model_name=model_name)
    removed = ", ".join(f"{table} {rows:,}" for table, rows in done.rows_deleted.items())
    console.print(f"erasure {done.erasure_id}: {done.deals:,} deal(s); rows deleted: {removed}")
    if done.versions_holding:
        console.print(f"{model_name} versions trained on this subject: "
                      + ", ".join(f"v{v}" for v in done.versions_holding)
                      + ("" if retrain else " (retrain: leadscore forget ... --retrain, or leadscore train)"))
    if done.versions_unknown:
        console.print("versions without a training id set (trained before it was logged): "
                      + ", ".join(f"v{v}" for v in done.versions_unknown))
    if retrain:
        from features.dataset import read_dataset
        from training.run import train

        result = train(read_dataset(data), model_name=model_name, data_dir=str(data))
        console.print(f"retrained: v{result['model_version']} ({result['gate_reason']})")

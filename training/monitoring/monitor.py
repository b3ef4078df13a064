"""The monitor report: logged scores joined with the outcomes known in the data.

`monitor_report(store, data, config)` -> JSON-ready dict (what `leadscore monitor` writes
and `POST /monitor` returns):
- `performance`: per model version, realised figures of the scores whose deals closed
  since (`performance.realised`), beside the test-fold figures training logged to MLflow
  and the figures expected under the model's own calibration on the same rows; by segment
  and by score decile; and the expectation for every score (open deals included);
- `drift`: PSI per feature and of the score, recent window vs the version's training
  reference (`drift.drift_table`), and per as-of week (`drift.drift_by_window`);
- `verdict`: one line, `level` ok / warn / alert, and `exit_status` (0 ok, 1 warn or alert).

The scores: one per (deal, model version, as-of day) (the last), so a repeated request does
not count twice; weekly re-scoring counts each week, as the test fold's weekly snapshots do.
Outcomes: won = 1 / lost = 0 for deals closed after the score's as-of by the data end;
deals still open are pending. Realised figures use the scores made at least `maturity_days`
before the data end (`mature`): among recent scores the deals that closed already are the
quick closers, whose outcomes are not a fair sample (quick losses, quick wins); the report
gives the pending share of the mature scores. Deals absent from the data count as unknown.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from features.build import FeatureBuilder
from features.errors import LeadscoreError
from features.schema import CanonicalData
from training.monitoring import performance as perf
from training.monitoring.drift import DriftThresholds, drift_by_window, drift_table
from training.store.connection import Store
from training.store.scores import scores as logged_scores

EXPERIMENT = "leadscore-monitor"
LEVELS = ("ok", "warn", "alert")


@dataclass(frozen=True)
class MonitorConfig:
    model_name: str = "leadscore"
    window_days: int = 28  # "recent" scores: as-of within this many days of the latest as-of logged
    drift: DriftThresholds = field(default_factory=DriftThresholds)
    brier_tolerance: float = 0.2  # realised Brier above the test fold's by more than this share: alert
    min_outcomes: int = 200  # fewer closed scores: performance not judged
    maturity_days: int = 90  # realised figures: scores at least this old at the data end (most deals closed)
    segment: str = "segment"
    # realised ECE above max(test fold's ECE, the ECE its own calibration predicts for these rows, which
    # grows with sampling noise on few outcomes) by more than this (absolute): warn
    ece_tolerance: float = 0.015


@dataclass
class VersionInfo:
    """What the monitor needs of a registered version (None where it cannot be had)."""

    builder: FeatureBuilder | None = None  # the version's feature builder (None: score drift only)
    reference: dict | None = None
    test_metrics: dict = field(default_factory=dict)
    note: str | None = None


def registry_version_info(model_name: str, version: int) -> VersionInfo:
    """A version's predictor, drift reference and test-fold Brier / AUC / ECE from MLflow."""
    from mlflow.exceptions import MlflowException

    from training.monitoring.reference import load_reference
    from training.registry import load_predictor
    from training.tracking import mlflow_client

    client = mlflow_client()
    try:
        run = client.get_run(client.get_model_version(model_name, str(version)).run_id)
        metrics = {k: run.data.metrics.get(f"close_probability.{k}") for k in ("brier", "auc", "ece")}
        return VersionInfo(load_predictor(model_name, version)[0].builder, load_reference(model_name, version),
                           metrics)
    except (MlflowException, LeadscoreError, OSError) as exc:  # e.g. a version deleted from the registry
        return VersionInfo(note=f"v{version} not in the registry ({str(exc).splitlines()[0][:200]}): no test-fold "
                                "figures or drift reference")


def monitor_report(store: Store, data: CanonicalData, config: MonitorConfig = MonitorConfig(),
                   version_info: Callable[[str, int], VersionInfo] = registry_version_info) -> dict:
    """The report of `config.model_name`'s logged scores against `data` (see the module doc)."""
    rows = scored_outcomes(store, data, config)
    if rows.empty:
        raise LeadscoreError(f"monitor: no logged score of model '{config.model_name}' yet: scores are logged by "
                             "`leadscore score` and the service's /score")
    infos = {v: version_info(config.model_name, int(v)) for v in rows["model_version"].unique()}
    report = {"model_name": config.model_name, "data_end": data.data_end.isoformat(),
              "config": {**asdict(config), "drift": asdict(config.drift)},
              "scores": {"logged": int(len(rows)), "closed": int(rows["y"].notna().sum()),
                         "pending": int((rows["status"] == "open").sum()),
                         "unknown_deal": int((rows["status"] == "unknown").sum())},
              "performance": {v: version_performance(rows[rows["model_version"] == v], infos[v], config, data.data_end)
                              for v in sorted(infos, key=int)}}
    latest = str(rows.loc[rows["as_of"].idxmax(), "model_version"])
    report["drift"] = {"model_version": latest, **version_drift(rows[rows["model_version"] == latest], data,
                                                                 infos[latest], config)}
    report["verdict"] = verdict(report, config)
    return _json_ready(report)


def monitor_now(data: CanonicalData, config: MonitorConfig = MonitorConfig()) -> dict:
    """`monitor_report` on the default store (`LEADSCORE_STORE_URL` or the embedded file);
    a psi_warn above psi_alert is refused."""
    from training.store.connection import open_store

    if config.drift.warn > config.drift.alert:
        raise LeadscoreError(f"psi_warn ({config.drift.warn}) is above psi_alert ({config.drift.alert})")
    store = open_store()
    try:
        return monitor_report(store, data, config)
    finally:
        store.close()


def scored_outcomes(store: Store, data: CanonicalData, config: MonitorConfig) -> pd.DataFrame:
    """Logged scores of the model (one per deal, version and as-of day) with y (1 won,
    0 lost, NaN pending or unknown), status and the deal's segment."""
    log = logged_scores(store)
    log = log[log["model_name"] == config.model_name]
    log = log.assign(day=log["as_of"].dt.normalize()).drop_duplicates(["deal_id", "model_version", "day"],
                                                                       keep="last")
    deals = data.deals.set_index("deal_id")
    known = log["deal_id"].isin(deals.index).to_numpy()
    d = deals.reindex(log["deal_id"])
    closed_after = (d["closed_at"] > log["as_of"].to_numpy()).fillna(False).to_numpy(dtype=bool)
    outcome = d["outcome"].astype("string").to_numpy(dtype=object, na_value=None)
    y = np.where(closed_after & (outcome == "won"), 1.0, np.where(closed_after & (outcome == "lost"), 0.0, np.nan))
    status = np.where(~known, "unknown", np.where(np.isfinite(y), "closed",
                                                  np.where(d["closed_at"].isna().to_numpy(), "open", "closed_before")))
    segment = d[config.segment].astype("string").fillna("(none)").to_numpy() if config.segment in deals else "(all)"
    return log.assign(y=y, status=status, segment=segment).reset_index(drop=True)


def version_performance(rows: pd.DataFrame, info: VersionInfo, config: MonitorConfig, data_end: pd.Timestamp
                        ) -> dict:
    mature = rows[rows["as_of"] <= data_end - pd.Timedelta(days=config.maturity_days)]
    closed = mature[mature["y"].notna()]
    closed = closed.assign(decile=perf.deciles(closed["probability"].to_numpy()))
    p = closed["probability"].to_numpy()
    return {"scores": int(len(rows)), "note": info.note, "mature_scores": int(len(mature)),
            "mature_pending_share": float((mature["status"] == "open").mean()) if len(mature) else None,
            "test_fold": info.test_metrics,
            "expected_all_scores": perf.expected(rows["probability"].to_numpy()),
            "expected_closed": perf.expected(p), "realised": perf.realised(closed["y"].to_numpy(), p),
            "by_segment": perf.grouped(closed, "segment"), "by_decile": perf.grouped(closed, "decile")}


def version_drift(rows: pd.DataFrame, data: CanonicalData, info: VersionInfo, config: MonitorConfig) -> dict:
    """Recent-window and weekly drift of one version's scores against its reference."""
    if info.reference is None:
        return {"note": "no drift reference for this version (trained before references were logged)"}
    features = _features(rows, data, info)
    prob = features["probability"].to_numpy()
    recent = features["as_of"] > features["as_of"].max() - pd.Timedelta(days=config.window_days)
    table = drift_table(info.reference, features[recent.to_numpy()], prob[recent.to_numpy()], config.drift)
    return {"window_days": config.window_days, "recent_rows": int(recent.sum()),
            "recent": table.to_dict(orient="records"),
            "by_week": drift_by_window(info.reference, features, prob, config.drift).to_dict(orient="records")}


def _features(rows: pd.DataFrame, data: CanonicalData, info: VersionInfo) -> pd.DataFrame:
    """The version's features of logged (deal, as-of) rows whose deal was open then."""
    builder = info.builder
    open_rows = rows[rows["status"].isin(["closed", "open"])][["deal_id", "as_of", "probability"]]
    open_rows = open_rows.sort_values("as_of", kind="stable", ignore_index=True)
    if builder is None or builder.static_ or open_rows.empty:
        return open_rows
    deals = data.deals.set_index("deal_id").reindex(open_rows["deal_id"])
    alive = (deals["created_at"].to_numpy() <= open_rows["as_of"].to_numpy())
    open_rows = open_rows[alive].reset_index(drop=True)
    feats = builder.transform_rows(data, open_rows[["deal_id", "as_of"]])
    return pd.concat([open_rows, feats.drop(columns=["deal_id", "as_of"]).reset_index(drop=True)], axis=1)


def verdict(report: dict, config: MonitorConfig) -> dict:
    """The worst finding: drift of the recent window, realised Brier against the test fold
    and against the model's own expectation, realised ECE against the larger of the test
    fold's and the expected one (calibration drift that leaves the ranking, and so the
    Brier, nearly intact)."""
    findings: list[tuple[str, str]] = []
    for row in report["drift"].get("recent", []):
        if row["level"] in ("warn", "alert"):
            findings.append((row["level"], f"{row['feature']} PSI {row['psi']:.2f}"))
    for version, perf_v in report["performance"].items():
        real, test, exp = perf_v["realised"], perf_v["test_fold"], perf_v["expected_closed"]
        if real["n"] < config.min_outcomes or real["brier"] is None:
            continue
        if test.get("brier") and real["brier"] > test["brier"] * (1 + config.brier_tolerance):
            findings.append(("alert", f"v{version} realised Brier {real['brier']:.3f} vs test fold "
                                      f"{test['brier']:.3f}"))
        if exp["brier"] is not None and abs(real["brier"] - exp["brier"]) > 2 * exp["brier_se"]:
            findings.append(("warn", f"v{version} realised Brier {real['brier']:.3f} outside its calibrated "
                                     f"expectation {exp['brier']:.3f} +- {2 * exp['brier_se']:.3f}"))
        ece_ref = max((v for v in (test.get("ece"), exp.get("ece")) if v is not None), default=None)
        if real.get("ece") is not None and ece_ref is not None and real["ece"] > ece_ref + config.ece_tolerance:
            findings.append(("warn", f"v{version} realised ECE {real['ece']:.3f} vs {ece_ref:.3f} expected "
                                     f"(test fold or own calibration): probabilities off by more than "
                                     f"{config.ece_tolerance:.3f}"))
    level = max((lvl for lvl, _ in findings), key=LEVELS.index, default="ok")
    shown = sorted(findings, key=lambda f: -LEVELS.index(f[0]))[:6]
    line = f"{level.upper()}: " + ("; ".join(text for _, text in shown) if shown else
                                   "no drift above the thresholds, live accuracy as expected")
    return {"level": level, "line": line, "exit_status": 0 if level == "ok" else 1,
            "findings": [{"level": lvl, "finding": text} for lvl, text in findings]}


def log_monitor(report: dict) -> str:
    """One MLflow run in `EXPERIMENT` tagged with the model and the drift's version, its
    metrics per version, and the version's tag `leadscore.monitor.verdict`; the run id."""
    import mlflow

    from training.tracking import flatten_metrics, mlflow_client, start_run

    version = report["drift"]["model_version"]
    metrics = {"performance": {f"v{v}": {k: p[k] for k in ("realised", "expected_closed", "expected_all_scores")}
                               for v, p in report["performance"].items()},
               "drift": {r["feature"]: r["psi"] for r in report["drift"].get("recent", [])},
               "exit_status": report["verdict"]["exit_status"]}
    tags = {"leadscore.kind": "monitor", "model_name": report["model_name"], "model_version": str(version)}
    with start_run(EXPERIMENT, run_name=f"monitor v{version}", tags=tags) as run:
        mlflow.log_metrics(flatten_metrics(metrics))
        mlflow.log_dict(report, "monitor.json")
    mlflow_client().set_model_version_tag(report["model_name"], str(version), "leadscore.monitor.verdict",
                                          report["verdict"]["line"][:4000])
    return run.info.run_id


def _json_ready(report: dict) -> dict:
    """Strict JSON: timestamps as ISO strings, NaN as None."""
    return json.loads(pd.Series([report]).to_json(orient="records", date_format="iso", double_precision=10))[0]

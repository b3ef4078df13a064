"""`pipeline`: what `leadscore pipeline` calls — metrics from a --data folder, written as JSON, CSV or HTML."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from features.analytics.metrics import pipeline_metrics
from features.dataset import read_dataset
from features.errors import LeadscoreError

FORMATS = {".json": "json", ".csv": "csv", ".html": "html", ".htm": "html"}
CSV_COLUMNS = ["metric", "group", "stage", "value"]
TOTAL = "(total)"
NOT_IN_CSV = ("deals",)  # the stalled deals list is per deal, not a metric: JSON and HTML carry it


def output_format(out: str | Path) -> str:
    suffix = Path(out).suffix.lower()
    if suffix not in FORMATS:
        raise LeadscoreError(f"cannot write '{out}': the file suffix must be one of {', '.join(FORMATS)}")
    return FORMATS[suffix]


def pipeline(data_dir: str | Path, as_of=None, group_by: str | None = None, out: str | Path | None = None,
             target: float | None = None, stall_days_without_activity: int = 21, window_days: int = 30) -> dict:
    """Compute the pipeline metrics of a --data folder at `as_of` and write them to `out` by its suffix."""
    fmt = output_format(out) if out is not None else None  # fail on a bad suffix before any work
    metrics = pipeline_metrics(read_dataset(data_dir), as_of, group_by=group_by, target=target,
                               stall_days_without_activity=stall_days_without_activity, window_days=window_days)
    if out is not None:
        write(metrics, Path(out), fmt)
    return metrics


def write(metrics: dict, out: Path, fmt: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "json":
        out.write_text(json.dumps(metrics, indent=2))
    elif fmt == "csv":
        with out.open("w", newline="") as f:
            w = csv.DictWriter(f, CSV_COLUMNS)
            w.writeheader()
            w.writerows(flat_rows(metrics))
    else:
        from features.report import render_html

        out.write_text(render_html(metrics))


def flat_rows(metrics: dict) -> list[dict]:
    """The metrics as a long table: metric (dotted path), group, stage, value (numbers only)."""
    blocks = [(TOTAL, metrics["total"])] + [(g["group"], g) for g in metrics.get("groups") or []]
    rows: list[dict] = []
    for group, block in blocks:
        body = {k: v for k, v in block.items() if k != "group"}
        _walk("", body, group, "", rows)
    return rows


def _walk(path: str, x, group: str, stage: str, rows: list[dict]) -> None:
    if isinstance(x, dict):
        for k, v in x.items():
            if k not in NOT_IN_CSV and k not in ("stage",):
                _walk(f"{path}.{k}" if path else k, v, group, stage, rows)
    elif isinstance(x, list):
        for item in x:
            if not isinstance(item, dict):
                continue
            if "stage" in item:
                _walk(path, item, group, item["stage"], rows)
            else:
                key = item.get("month") or item.get("as_of") or item.get("value")
                _walk(f"{path}[{key}]", {k: v for k, v in item.items() if k not in ("month", "as_of", "value")},
                      group, stage, rows)
    elif isinstance(x, bool) or isinstance(x, (int, float)) or x is None:
        rows.append({"metric": path, "group": group, "stage": stage, "value": "" if x is None else x})

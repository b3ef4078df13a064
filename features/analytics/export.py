"""The pipeline metrics as a long table (what `leadscore pipeline --out x.csv` writes)."""
from __future__ import annotations

import pandas as pd

CSV_COLUMNS = ["metric", "group", "stage", "value"]
TOTAL = "(total)"
NOT_IN_CSV = ("deals",)  # the stalled deals list is per deal, not a metric: JSON and HTML carry it


def metrics_table(metrics: dict) -> pd.DataFrame:
    """The metrics as a long table: metric (dotted path), group, stage, value (numbers only;
    an unknown value is an empty string)."""
    return pd.DataFrame(_flat_rows(metrics), columns=CSV_COLUMNS, dtype=object)


def _flat_rows(metrics: dict) -> list[dict]:
    """The rows of `metrics_table`, one dict per number."""
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

"""A PII canary through the whole chain (issue 14): an export whose declared PII columns
carry a unique string, in well-formed rows and in malformed lines (a stray quote, extra
fields), goes through ingest -> train (MLflow run, registered model) -> score -> pipeline ->
forecast (MLflow and the forecast store); the canary is in no file any step wrote (tables,
rejects, MLflow database and artifacts, the model files a Bento packs, the store, the
outputs) and in no console output."""
from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from serving.cli import app

CANARY = "CANARY-51d0e2"
PII = ["Contact Name", "Contact Email"]


def run(*args: str) -> str:
    out = CliRunner().invoke(app, list(args))
    assert out.exit_code == 0, out.output
    return out.output


def with_pii(export: Path) -> Path:
    """Adds PII columns holding the canary to the export's deals, declares them, and appends
    malformed lines that carry it; returns the mapping."""
    deals = pd.read_csv(export / "deals.csv", dtype=str, keep_default_na=False)
    deals["Contact Name"] = [f"{CANARY} Doe, {i}" for i in range(len(deals))]  # quoted: has a comma
    deals["Contact Email"] = [f"{CANARY}.{i}@example.com" for i in range(len(deals))]
    deals.to_csv(export / "deals.csv", index=False, quoting=csv.QUOTE_MINIMAL)
    first = deals.iloc[0].tolist()
    # a quote left open in the owner field (what swallowed rows into `owner` in issue 14), in the
    # middle of the file, and a line with an extra field at the end
    stray = ",".join(["Dx1", f'"{first[1]}', *first[2:-2], f"{CANARY} stray", f"{CANARY}@x.com"])
    extra = ",".join(["Dx2", *first[1:-2], f"{CANARY} extra", f"{CANARY}@y.com", f"{CANARY} more"])
    lines = (export / "deals.csv").read_text().splitlines()
    lines[10:10] = [stray]
    (export / "deals.csv").write_text("\n".join([*lines, extra]) + "\n")
    mapping = yaml.safe_load((export / "mapping.yaml").read_text())
    mapping["pii"] = PII
    (export / "mapping.yaml").write_text(yaml.safe_dump(mapping, sort_keys=False))
    return export / "mapping.yaml"


def canary_files(folder: Path) -> list[Path]:
    """Files under `folder` holding the canary: Parquet read back, everything else as raw bytes
    (SQLite databases, pickled and LightGBM model files, JSON, HTML, CSV)."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        raw = path.read_bytes()
        if path.suffix == ".parquet":
            raw = pd.read_parquet(path).astype(str).to_csv().encode()
        if CANARY.encode() in raw:
            found.append(path)
    return found


@pytest.mark.slow(reason="the whole CLI chain with MLflow on an export with PII columns")
def test_a_pii_canary_reaches_no_output(local_mlflow_uri, tmp_path, monkeypatch):
    export, data, out = tmp_path / "export", tmp_path / "data", tmp_path / "out"
    out.mkdir()
    run("generate", "--deals", "600", "--seed", "3", "--out", str(tmp_path / "generated"), "--export", str(export))
    mapping = with_pii(export)
    assert CANARY in (export / "deals.csv").read_text()  # the canary is in the input
    said = [run("ingest", "--mapping", str(mapping), "--out", str(data))]
    rejects = pd.read_csv(data / "rejects.csv")
    assert (rejects["reason"] == "malformed_row").sum() == 2  # both bad lines, by line number
    said.append(run("train", "--data", str(data), "--metrics-out", str(out / "metrics.json")))
    said.append(run("score", "--data", str(data), "--out", str(out / "scores.csv")))
    said.append(run("pipeline", "--data", str(data), "--out", str(out / "pipeline.html")))
    said.append(run("forecast", "--data", str(data), "--periods", "2", "--sims", "200",
                    "--out", str(out / "forecast.csv")))
    store = tmp_path / "store.db"  # the forecast track record beside the embedded MLflow database
    assert store.is_file() and (tmp_path / "mlflow.db").is_file()
    models = [p for p in tmp_path.rglob("MLmodel")]
    assert models  # the registered model's files: what `make bento` packs into the Bento
    written = [p for p in tmp_path.rglob("*") if p.is_file() and export not in p.parents]
    assert len(written) > 20
    assert [p for p in canary_files(tmp_path) if export not in p.parents] == []
    assert not any(CANARY in text for text in said)

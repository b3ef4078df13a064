"""`leadscore score`: the champion scores every deal open at an as-of date."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from features.dataset import read_dataset
from features.errors import LeadscoreError
from training import tracking
from training.pyfunc import unwrap

WRITERS = {".csv", ".json", ".parquet"}


def load_predictor(model_name: str = "leadscore", version: int | None = None):
    """(predictor, version) of the champion (or of `version`) from the registry."""
    import mlflow

    if version is None:
        model, version = tracking.load_champion(model_name)
        return unwrap(model), version
    mlflow.set_tracking_uri(tracking.tracking_uri())
    return unwrap(mlflow.pyfunc.load_model(f"models:/{model_name}/{version}")), version


def score(data_dir, out, as_of=None, explain: bool = True, model_name: str = "leadscore") -> pd.DataFrame:
    """Score deals open at `as_of` (default: the data end) and write them by file suffix."""
    out = Path(out)
    if out.suffix not in WRITERS:
        raise LeadscoreError(f"--out must end in one of {sorted(WRITERS)}, not '{out.suffix or out.name}'")
    data = read_dataset(data_dir)
    predictor, version = load_predictor(model_name)
    as_of = None if predictor.static else (pd.Timestamp(as_of) if as_of else data.data_end)
    scored = predictor.score(data, as_of, explain=explain).assign(model_version=version)
    write_scores(scored, out)
    return scored


def write_scores(scored: pd.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    frame = scored.copy()
    if "top_factors" in frame:
        frame["top_factors"] = [json.dumps(f) for f in frame["top_factors"]]
    if out.suffix == ".csv":
        frame.to_csv(out, index=False)
    elif out.suffix == ".parquet":
        frame.to_parquet(out, index=False)
    else:
        out.write_text(scored.to_json(orient="records", date_format="iso", indent=1))

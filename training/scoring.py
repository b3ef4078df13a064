"""What `leadscore score` calls: a registered predictor scores every deal open at an as-of date."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from features.schema import CanonicalData
from training.registry import load_predictor


def score(data: CanonicalData, as_of=None, explain: bool = True, model_name: str = "leadscore",
          version: int | None = None, client=None, data_dir: str | Path | None = None) -> pd.DataFrame:
    """Deals open at `as_of` (default: the data end) scored by `version` (default: the
    champion), one row per deal with the `model_version` that scored it. With a Dask
    `client`: per partition on the cluster (`data_dir`'s partitions, else `data` split)."""
    predictor, version = load_predictor(model_name, version)
    as_of = None if predictor.static else (pd.Timestamp(as_of) if as_of else data.data_end)
    if client is not None:
        from training.distributed import score_partitions

        frame = score_partitions(client, data if data_dir is None else data_dir, predictor, as_of, explain)
        return frame.assign(model_version=version)
    return predictor.score(data, as_of, explain=explain).assign(model_version=version)

"""The drift reference of a model version: the distribution of each feature and of the
score on the rows its test fold was measured on, kept compactly (quantile bins, category
shares), logged as the training run's artifact `monitoring/reference.json` and read back
by registered version. Why the test fold: it is the most recent labelled period before
the model went live, and the one whose Brier / AUC the monitor compares live figures with.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from features.build import FeatureBuilder
from features.definitions import CALENDAR_FEATURES

REFERENCE_ARTIFACT = "monitoring/reference.json"
N_BINS = 10
MAX_LEVELS = 10  # categorical levels kept by name; the rest are "(other)"
OTHER, MISSING = "(other)", "(missing)"


def column_reference(values: pd.Series, n_bins: int = N_BINS) -> dict:
    """One column's reference: numeric -> inner quantile edges and bin shares (+ missing
    share); otherwise -> the most common levels' shares (+ other, missing)."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        x = values.to_numpy(dtype="float64", na_value=np.nan)
        finite = x[np.isfinite(x)]
        edges = np.unique(np.quantile(finite, np.linspace(0, 1, n_bins + 1)[1:-1])) if finite.size else np.array([])
        ref = {"kind": "numeric", "edges": edges.tolist()}
    else:
        counts = values.astype("string").value_counts(dropna=True)
        ref = {"kind": "categorical", "levels": [str(v) for v in counts.index[:MAX_LEVELS]]}
    ref["shares"] = shares(values, ref).tolist()
    return ref


def shares(values: pd.Series, ref: dict) -> np.ndarray:
    """Shares of `values` in the reference's bins (numeric: len(edges) + 1 bins, then
    missing; categorical: each level, other, missing). Sums to 1 (all zeros when empty)."""
    n = len(values)
    if ref["kind"] == "numeric":
        x = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        missing = ~np.isfinite(x)
        idx = np.where(missing, len(ref["edges"]) + 1, np.searchsorted(np.asarray(ref["edges"]), x, side="right"))
        counts = np.bincount(idx, minlength=len(ref["edges"]) + 2)
    else:
        text = values.astype("string")
        levels = pd.Index(ref["levels"])
        idx = levels.get_indexer(text.fillna(MISSING).to_numpy())
        idx = np.where(idx >= 0, idx, len(levels))  # other
        idx = np.where(text.isna().to_numpy(), len(levels) + 1, idx)
        counts = np.bincount(idx, minlength=len(levels) + 2)
    return counts / n if n else counts.astype("float64")


def deal_features(builder: FeatureBuilder) -> list[str]:
    """The features drift is judged on: the deal's own (stage, amount, dates, activity,
    categoricals, attributes). Left out: the history aggregates (group win rates, closed-deal
    counts, account priors, owner stats, stage mean dwell), which are the builder's memory of
    past outcomes and move as deals close whatever the new deals look like (their effect
    shows in the realised performance), and the calendar features, which describe the
    snapshot's date and move with the calendar."""
    time_level = {*builder._history_names(), *CALENDAR_FEATURES, "stage_mean_dwell_days"}
    return [name for name in builder.feature_names_ if name not in time_level]


def build_reference(features: pd.DataFrame, probabilities: np.ndarray, source: str) -> dict:
    """The reference of feature rows (the columns to judge: `deal_features`) and their probabilities."""
    return {"source": source, "n_rows": int(len(features)),
            "features": {str(c): column_reference(features[c]) for c in features.columns},
            "score": column_reference(pd.Series(np.asarray(probabilities, dtype="float64")))}


def log_reference(reference: dict) -> None:
    """Into the active MLflow run (training calls it inside its run)."""
    import mlflow

    mlflow.log_dict(reference, REFERENCE_ARTIFACT)


def load_reference(model_name: str, version: int) -> dict | None:
    """The reference logged with a registered version's run; None for a version trained
    before references were logged."""
    import mlflow

    from training.tracking import mlflow_client

    run_id = mlflow_client().get_model_version(model_name, str(version)).run_id
    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/{REFERENCE_ARTIFACT}")
    except Exception:  # MlflowException / OSError: the artifact does not exist
        return None

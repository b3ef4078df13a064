"""The predictor as ONE MLflow pyfunc model: feature code + stored aggregates + both
models + calibrator, with a signature. Input: one row per open deal (canonical deal
columns plus `stage`, optional `stage_entered_at`, `expected_close_date`); optional
param `as_of`. Output: one row per deal with the scores. Rows are checked and scored by
the service's request path (`training.request.score_request`)."""
from __future__ import annotations

import pickle
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import infer_signature

from features.errors import LeadscoreError
from features.snapshots import deals_at
from training.artifacts import PREDICTOR_ARTIFACT
from training.compiled import CompiledPredictor
from training.request import score_request

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
OUTPUT_COLUMNS = ["deal_id", "close_probability", "score", "tier", "p_close_within_30d", "p_close_within_60d",
                  "p_close_within_90d", "close_days_p10", "close_days_p50", "close_days_p90"]
REQUIREMENTS = ["pandas>=3.1,<3.2", "numpy>=2.0,<3", "scipy>=1.13,<2", "scikit-learn>=1.9,<1.10",
                "lightgbm>=4.7,<4.8", "pyarrow>=18,<26", "mlflow>=3.17,<3.18"]


class LeadScoreModel(mlflow.pyfunc.PythonModel):
    """MLflow wrapper; the real work is in `training.predictor.LeadScorePredictor`."""

    def load_context(self, context) -> None:
        with open(context.artifacts[PREDICTOR_ARTIFACT], "rb") as fh:
            self.use(pickle.load(fh))

    def use(self, predictor) -> None:
        """Serve `predictor` (a `LeadScorePredictor`), compiled for requests."""
        self.predictor = predictor
        self.model = CompiledPredictor.compile(predictor)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        as_of = (params or {}).get("as_of") or None
        scored = score_request(self.model, frame_records(model_input), as_of)
        if scored.checked.errors:
            raise LeadscoreError(scored.checked.summary())
        return pd.DataFrame({c: v for c, v in scored.scores.items() if c in OUTPUT_COLUMNS})[
            [c for c in OUTPUT_COLUMNS if c in scored.scores]]


def frame_records(frame: pd.DataFrame) -> list[dict]:
    """Input rows as payload deals: missing values dropped, deal ids as text."""
    records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    return [{k: str(v) if k == "deal_id" else v for k, v in rec.items() if v is not None} for rec in records]


def example_input(data, n: int = 3) -> pd.DataFrame:
    """A few open deals in the pyfunc input layout, for the signature and input example."""
    deals = data.deals
    open_deals = deals[deals["closed_at"].isna()] if "closed_at" in deals else deals
    sample = (open_deals if len(open_deals) else deals).head(n).copy()
    keep = [c for c in sample.columns if c not in ("closed_at", "outcome")]
    sample = sample[keep]
    if "stage" not in sample and not data.meta.static:
        sample["stage"] = data.meta.stages[0]
        if data.stage_events is not None and len(data.stage_events):
            state = deals_at(data, data.data_end).set_index("deal_id")["stage"]
            sample["stage"] = sample["deal_id"].map(state).fillna(data.meta.stages[0]).to_numpy()
    for col in sample.columns:
        if pd.api.types.is_datetime64_any_dtype(sample[col]):
            sample[col] = sample[col].dt.strftime("%Y-%m-%dT%H:%M:%S")
    # integers cannot hold missing values in an MLflow schema: declare numbers as doubles
    ints = {c: "float64" for c in sample.columns if pd.api.types.is_integer_dtype(sample[c])}
    strings = {c: "object" for c in sample.columns if sample[c].dtype == "string"}
    return sample.astype({**ints, **strings})


def log_predictor(predictor, data, name: str = "model") -> mlflow.models.model.ModelInfo:
    """Log the predictor as one pyfunc model in the active run (with signature)."""
    x = example_input(data)
    wrapper = LeadScoreModel()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "predictor.pkl"
        path.write_bytes(pickle.dumps(predictor))
        wrapper.use(predictor)
        as_of = None if predictor.static else data.data_end.isoformat()
        y = wrapper.predict(None, x, {"as_of": as_of})
        signature = infer_signature(x, y, params={"as_of": ""})
        return mlflow.pyfunc.log_model(
            name=name, python_model=wrapper, artifacts={PREDICTOR_ARTIFACT: str(path)},
            code_paths=[str(PACKAGE_ROOT / "features"), str(PACKAGE_ROOT / "training")],
            signature=signature, input_example=x, pip_requirements=REQUIREMENTS)


def unwrap(pyfunc_model) -> object:
    """The LeadScorePredictor inside a loaded pyfunc model."""
    return pyfunc_model.unwrap_python_model().predictor

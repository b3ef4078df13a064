"""Registered models without training: constant pyfunc models logged into a real MLflow
store, for the tracking, gate and model-data identity tests."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from training import tracking

HOLDOUT_X = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0]})


def log_constant_model(value: float, run_name: str, experiment: str = "gate-tests",
                       artifacts: dict[str, str] | None = None) -> str:
    """One run holding a pyfunc model that always predicts `value` (with `artifacts`, files
    packed into it by name); returns the run id."""
    import mlflow
    from mlflow.models import infer_signature

    class Constant(mlflow.pyfunc.PythonModel):
        def __init__(self, p: float):
            self.p = p

        def predict(self, context, model_input: pd.DataFrame, params=None):
            return np.full(len(model_input), self.p)

    signature = infer_signature(HOLDOUT_X, np.array([value]))
    with tracking.start_run(experiment, run_name=run_name) as run, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no input example: the signature is given
        # explicit requirements: inferring them starts a subprocess that takes seconds
        mlflow.pyfunc.log_model(name="model", python_model=Constant(value), signature=signature,
                                pip_requirements=["mlflow"], artifacts=artifacts)
    return run.info.run_id

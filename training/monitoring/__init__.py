"""Knowing when the model is wrong: live accuracy, drift and score trends (issue 16).

- `reference`: a compact picture of what the model was evaluated on (quantile bins per
  feature, the score distribution), logged with each training run and read back by version;
- `drift`: PSI of each feature and of the score between that reference and recent scores;
- `performance`: realised reliability / ECE / Brier / AUC of logged scores whose deals have
  closed, and the Brier / ECE expected under the model's own calibration before they close;
- `monitor`: the report, its verdict and exit status, and its MLflow run;
- `trend`: improving / steady / declining per deal from its recent logged scores.

Library choice: the statistics are numpy/scikit-learn (`training.evaluate`'s Brier, ECE,
AUC and reliability table), not Evidently. Evidently 0.7.23 resolves with our pins (a
throwaway venv, `pip install -e . evidently`: pandas 3.1.1, numpy 2.4.6, pydantic 2.14.4,
scikit-learn 1.9.1 unchanged; `pip check` clean; 33 packages added: litestar, nltk, plotly,
statsmodels, faker, dynaconf, uvloop, ...), but it does not run on pandas 3:
`from evidently.presets import DataDriftPreset` raises ImportError (`infer_dtype_from_object`
is gone from `pandas.core.dtypes.common`). PSI is a few lines; the report is the same JSON
for `POST /monitor` and the CLI.
"""

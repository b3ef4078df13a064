"""Knowing when the model is wrong: live accuracy, drift and score trends (issue 16).

- `reference`: a compact picture of what the model was evaluated on (quantile bins per
  feature, the score distribution), logged with each training run and read back by version;
- `drift`: PSI of each feature and of the score between that reference and recent scores;
- `performance`: realised reliability / ECE / Brier / AUC of logged scores whose deals have
  closed, and the Brier / ECE expected under the model's own calibration before they close;
- `monitor`: the report, its verdict and exit status, and its MLflow run;
- `trend`: improving / steady / declining per deal from its recent logged scores.

Library choice: the statistics are numpy/scipy/scikit-learn (`training.evaluate`'s Brier,
ECE, AUC and reliability table), not Evidently. Evidently 0.7.23 does resolve with our pins
(`pip install --dry-run -e . evidently` in a throwaway venv keeps pandas 3.1.1, numpy 2.4.6,
pydantic 2.14.4, scikit-learn 1.9.1), but it brings 33 more packages into the service's
environment (litestar, nltk, plotly, statsmodels, faker, dynaconf, uvloop, ...), and what we
need from it is PSI (a few lines) and the binned calibration metrics we already have and
test; the report here is the same JSON for `POST /monitor` and the CLI.
"""

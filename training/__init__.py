"""Models, baselines, evaluation, forecasts and MLflow tracking."""

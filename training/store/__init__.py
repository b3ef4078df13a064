"""The project's store: what the product remembers in a real database (SQLAlchemy).

- `schema`: the tables (the one description of the schema) and the numbered migrations.
- `connection`: `open_store(url)` -> `Store` (embedded SQLite next to the MLflow store by
  default, any SQLAlchemy URL through `LEADSCORE_STORE_URL`).
- `forecasts`: the forecast track record; `accuracy`: how the first forecast of each
  period turned out; `scores`: the score log; `erasure`: forgetting a subject, audited.

Why it lives in `training/`: the forecast (training/forecast) and the service (serving/)
both write to it and imports run features <- training <- serving, so the lowest package
that writes to it is its home; `serving` imports it downwards. It is not in `features/`
because it stores model outputs (model name and version), not facts about deals.
"""

"""Rows for the store tests: a forecast row and a score row with overridable fields."""
from __future__ import annotations

import pandas as pd


def forecast_rows(**overrides) -> pd.DataFrame:
    row = {"as_of": pd.Timestamp("2024-01-10"), "period_start": pd.Timestamp("2024-01-01"),
           "period_end": pd.Timestamp("2024-02-01"), "freq": "month", "group_value": "(all)",
           "p10": 80.0, "p50": 100.0, "p90": 120.0, "model_name": "leadscore", "model_version": "3"}
    return pd.DataFrame([{**row, **overrides}])


def score_row(deal_id: str, **overrides) -> dict:
    return {"deal_id": deal_id, "as_of": pd.Timestamp("2024-03-01"), "model_name": "leadscore",
            "model_version": "3", "probability": 0.25, "score": 25, "tier": "C",
            "top_factors": ["stage", "days_in_stage"], **overrides}

"""The revenue forecast wing: bookings (the one rule for what a win books), periods,
open-pipeline valuation, new deals, calibration from past periods, Monte Carlo
simulation, the forecast itself (`core.forecast`), the risk list and target report
(`outlook.outlook` runs all three), the backtest and the report (JSON, CSV table, HTML,
MLflow)."""

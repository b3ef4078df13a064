"""The forecast track record: how the stored forecasts turned out once periods closed.

For each period, group and horizon (periods ahead: 0 = made inside the period, 1 = in the
period before, ...) the **first** forecast made is compared with what was booked: its
landing P50 (closed so far + the P50 of the rest; for a period not yet begun, the P50)
against the realised bookings, and its landing P10-P90 range for the hit rate. Later
forecasts of the same period and horizon are ignored, so re-running a forecast does not
flatter the record. The realised bookings come from the caller (the one bookings rule
lives with the forecast), for closed periods only.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from features.errors import LeadscoreError
from training.forecast.periods import FREQS
from training.store.connection import Store
from training.store.forecasts import forecasts
from training.store.schema import NO_GROUP

REALISED_COLUMNS = ("period_start", "group_value", "booked")
WITHIN = (0.05, 0.15)  # shares of periods whose landing P50 is within +-5 % and +-15 %


def forecast_accuracy(store: Store, realised: pd.DataFrame, *, freq: str,
                      group_column: str = NO_GROUP) -> dict:
    """Accuracy of the stored `freq` forecasts split by `group_column` against `realised`
    (columns `REALISED_COLUMNS`: calendar period start, group value ("(all)" for the total),
    booked amount; one row per closed period and group, zero bookings included: a period
    absent from it counts as not closed yet). Returns JSON-ready
    `{"freq", "group_column", "by_horizon": [...], "periods": [...]}`; by_horizon rows hold
    per group and horizon: periods, booked, wape, bias (signed, > 0 = over-forecast),
    within_5pct, within_15pct, p10_p90_hit_rate."""
    compared = compare_first_forecasts(forecasts(store, freq=freq, group_column=group_column), realised, freq)
    return {"freq": freq, "group_column": group_column,
            "by_horizon": _records(summarise_by_horizon(compared)),
            "periods": _records(compared)}


def compare_first_forecasts(stored: pd.DataFrame, realised: pd.DataFrame, freq: str) -> pd.DataFrame:
    """One row per (period, group, horizon) with a realised value: the first forecast's
    landing P10/P50/P90, the booked amount, the error and whether the range held it."""
    missing = [c for c in REALISED_COLUMNS if c not in realised.columns]
    if missing:
        raise LeadscoreError(f"forecast_accuracy: realised bookings lack {missing}; give {list(REALISED_COLUMNS)}")
    first = first_forecasts(stored, freq)
    actual = realised.assign(period_start=pd.to_datetime(realised["period_start"]),
                             group_value=realised["group_value"].astype(str))[list(REALISED_COLUMNS)]
    rows = first.merge(actual, on=["period_start", "group_value"], how="inner")
    rows["error"] = rows["landing_p50"] - rows["booked"]
    rows["abs_pct_error"] = _abs_pct_error(rows["error"], rows["booked"])
    rows["in_p10_p90"] = (rows["landing_p10"] <= rows["booked"]) & (rows["booked"] <= rows["landing_p90"])
    return rows.sort_values(["group_value", "horizon", "period_start"], ignore_index=True)


def first_forecasts(stored: pd.DataFrame, freq: str) -> pd.DataFrame:
    """The earliest stored forecast of each (period, group, horizon), with its landing
    range (stored landing, else closed so far + the rest)."""
    if freq not in FREQS:
        raise LeadscoreError(f"forecast_accuracy: freq must be one of {sorted(FREQS)}, not '{freq}'")
    code = FREQS[freq]
    horizon = (stored["period_start"].dt.to_period(code).array.asi8
               - stored["as_of"].dt.to_period(code).array.asi8)
    frame = stored.assign(horizon=horizon.astype(int))
    frame = frame[frame["horizon"] >= 0]
    frame = frame.sort_values(["as_of", "forecast_id"], kind="stable")
    frame = frame.drop_duplicates(["period_start", "group_value", "horizon"], keep="first")
    closed = frame["closed_so_far"].fillna(0.0)
    for q in ("p10", "p50", "p90"):
        frame[f"landing_{q}"] = frame[f"landing_{q}"].fillna(frame[q] + closed)
    return frame[["period_start", "period_end", "group_value", "horizon", "as_of", "model_name", "model_version",
                  "landing_p10", "landing_p50", "landing_p90"]]


def summarise_by_horizon(compared: pd.DataFrame) -> pd.DataFrame:
    """Per group and horizon: periods, booked, WAPE, bias, shares within +-5/15 %, hit rate."""
    frame = compared.assign(abs_error=compared["error"].abs(),
                            **{f"within_{round(w * 100)}pct": compared["abs_pct_error"] <= w for w in WITHIN})
    grouped = frame.groupby(["group_value", "horizon"], sort=True)
    sums = grouped[["booked", "error", "abs_error"]].sum()
    shares = grouped[[f"within_{round(w * 100)}pct" for w in WITHIN] + ["in_p10_p90"]].mean()
    booked = sums["booked"].where(sums["booked"] != 0)
    summary = pd.DataFrame({"periods": grouped.size(), "booked": sums["booked"],
                            "wape": sums["abs_error"] / booked, "bias": sums["error"] / booked})
    summary = summary.join(shares.rename(columns={"in_p10_p90": "p10_p90_hit_rate"}))
    return summary.reset_index()


def _abs_pct_error(error: pd.Series, booked: pd.Series) -> pd.Series:
    """|error| / booked; 0 for an exact forecast of nothing, inf for a miss of nothing."""
    nothing = booked == 0
    ratio = error.abs() / booked.abs().where(~nothing)
    return ratio.mask(nothing, np.where(error == 0, 0.0, np.inf))


def _records(frame: pd.DataFrame) -> list[dict]:
    """JSON-ready rows: ISO dates, None for missing or infinite values."""
    return json.loads(frame.replace([np.inf, -np.inf], np.nan).to_json(orient="records", date_format="iso",
                                     double_precision=15))

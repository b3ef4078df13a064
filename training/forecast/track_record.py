"""The forecast's track record: every forecast made is stored, and compared with what was
booked once its periods closed (`training.store` keeps the rows and computes the record).

- `forecast_rows` / `store_forecast`: an `Outlook` -> one store row per period x group
  (landing = closed so far in the period + the forecast of the rest).
- `ForecastRecorder`: what the CLI and the service call; a store outage never fails the
  forecast: it is counted and returned as a one-line note.
- `realised_by_period`: booked value per closed period and group, with the one bookings rule.
- `accuracy_report`: the stored forecasts against `realised_by_period`, by horizon.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import sqlalchemy as sa

from features.schema import CanonicalData
from training.forecast.bookings import AMOUNT, booking_rule
from training.forecast.newdeals import ALL
from training.forecast.periods import FREQS, check_as_of
from training.store.accuracy import forecast_accuracy
from training.store.connection import Store, StoreUnavailable, open_store
from training.store.forecasts import record_forecasts
from training.store.schema import NO_GROUP
from training.tracking import data_fingerprint

if TYPE_CHECKING:
    from training.forecast.outlook import Outlook

log = logging.getLogger("leadscore.track_record")
ACCURACY_METRICS = ("periods", "wape", "bias", "within_5pct", "within_15pct", "p10_p90_hit_rate")
NO_VALUE = "(none)"  # the group of a deal without a value in the grouping column (as the targets read it)


def dataset_fingerprint(data: CanonicalData) -> str:
    """The sha256 of the canonical tables, as training records it (`tracking.data_fingerprint`)."""
    frames = {"deals": data.deals, "stage_events": data.stage_events, "activities": data.activities}
    return str(data_fingerprint(frames)["data_sha256"])


def forecast_rows(result: Outlook, model_name: str, model_version: str | int,
                  fingerprint: str | None) -> pd.DataFrame:
    """The store rows of one forecast (`training.store.forecasts.REQUIRED` + landing):
    period_start is the calendar start; closed_so_far and the landing are the forecast
    table's own (`core.closed_so_far`, the simulation's landing quantiles)."""
    fc = result.forecast
    table = fc.table
    starts = pd.PeriodIndex(table["period"], freq=FREQS[fc.freq])
    rows = pd.DataFrame({"as_of": fc.as_of, "period_start": starts.start_time, "period_end": (starts + 1).start_time,
                         "freq": fc.freq, "group_column": fc.group_by or NO_GROUP,
                         "group_value": table["group"].astype(str).to_numpy(),
                         "p10": table["p10"].to_numpy(), "p50": table["p50"].to_numpy(),
                         "p90": table["p90"].to_numpy(),
                         "closed_so_far": table["closed_so_far"].to_numpy(dtype="float64"),
                         "model_name": model_name, "model_version": str(model_version),
                         "data_fingerprint": fingerprint})
    for q in ("p10", "p50", "p90"):
        rows[f"landing_{q}"] = table[f"landing_{q}"].to_numpy()
    return rows


def store_forecast(store: Store, result: Outlook, model_name: str, model_version: str | int,
                   fingerprint: str | None) -> int:
    """Store one forecast's rows (one transaction); returns the row count. Store errors propagate."""
    return record_forecasts(store, forecast_rows(result, model_name, model_version, fingerprint))


@dataclass
class ForecastRecorder:
    """Remembers forecasts in the store at `url` (default: `LEADSCORE_STORE_URL` or the
    embedded SQLite file), opened on first use. `record` never raises a store error: it
    logs one line, counts it in `failures` and adds a note to the forecast's notes."""

    url: str | None = None
    failures: int = 0
    _store: Store | None = field(default=None, repr=False)
    _fingerprinted: tuple[CanonicalData, str] | None = field(default=None, repr=False)

    def record(self, result: Outlook, model_name: str, model_version: str | int, data: CanonicalData) -> str | None:
        """Store `result` (made from `data`); None when stored, else the note it added to
        `result.forecast.notes`."""
        try:
            self._store = self._store or open_store(self.url)
            store_forecast(self._store, result, model_name, model_version, self._fingerprint(data))
        except (StoreUnavailable, sa.exc.SQLAlchemyError, OSError) as exc:
            self.failures += 1
            reason = str(exc).splitlines()[0][:300]
            log.warning("forecast not stored in the track record (%d failures so far): %s", self.failures, reason)
            note = f"this forecast was not stored in the track record (store unavailable: {reason})"
            result.forecast.notes.append(note)
            return note
        return None

    def _fingerprint(self, data: CanonicalData) -> str:
        """The dataset's fingerprint, computed once per dataset (the service reuses its dataset)."""
        if self._fingerprinted is None or self._fingerprinted[0] is not data:
            self._fingerprinted = (data, dataset_fingerprint(data))
        return self._fingerprinted[1]


def realised_by_period(data: CanonicalData, freq: str, group_by: str | None = None) -> pd.DataFrame:
    """Booked value (`bookings.booking_rule` at the data's end) of every whole period that
    closed by the data's end, for the total ("(all)") and each value of `group_by`;
    columns period_start, group_value, booked (zero bookings included)."""
    code = FREQS[freq]
    deals = data.deals
    end = check_as_of(data, data.data_end)
    closed_periods = pd.period_range(deals["created_at"].min().to_period(code), end.to_period(code) - 1, freq=code)
    won = deals.loc[((deals["outcome"] == "won") & (deals["closed_at"] <= end)).fillna(False).to_numpy(dtype=bool)]
    value = booking_rule(deals, end).booked(_amounts(won))
    frame = pd.DataFrame({"period": won["closed_at"].dt.to_period(code), "group_value": ALL, "booked": value})
    if group_by:
        frame = pd.concat([frame, frame.assign(group_value=_group_labels(won, group_by))], ignore_index=True)
    groups = frame["group_value"].unique() if len(frame) else np.array([ALL])
    grid = pd.MultiIndex.from_product([closed_periods, groups], names=["period", "group_value"])
    booked = frame.groupby(["period", "group_value"])["booked"].sum().reindex(grid, fill_value=0.0).reset_index()
    booked["period_start"] = pd.PeriodIndex(booked["period"], freq=code).start_time
    return booked[["period_start", "group_value", "booked"]]


def accuracy_report(store: Store, data: CanonicalData, freq: str, group_by: str | None = None) -> dict:
    """How the stored `freq` forecasts (split by `group_by`, or not split) turned out
    against `realised_by_period(data, ...)`: `store.accuracy.forecast_accuracy`'s JSON."""
    return forecast_accuracy(store, realised_by_period(data, freq, group_by), freq=freq,
                             group_column=group_by or NO_GROUP)


def log_accuracy(report: dict, params: dict) -> str:
    """One MLflow run in the forecast experiment: per group and horizon, the metrics
    `<group>.h<horizon>.<metric>` (wape, bias, within_5pct, within_15pct, p10_p90_hit_rate,
    periods) and the report JSON; returns the run id."""
    import mlflow

    from training.forecast.report import EXPERIMENT
    from training.tracking import flatten_metrics, start_run

    nested: dict = {}
    for row in report["by_horizon"]:
        nested.setdefault(row["group_value"], {})[f"h{row['horizon']}"] = {k: row.get(k) for k in ACCURACY_METRICS}
    with start_run(EXPERIMENT, run_name="forecast accuracy", tags={"leadscore.kind": "forecast_accuracy"}) as run:
        mlflow.log_params({k: str(v) for k, v in params.items()})
        mlflow.log_metrics(flatten_metrics(nested))
        mlflow.log_dict(report, "forecast_accuracy.json")
        return run.info.run_id


def _group_labels(deals: pd.DataFrame, group_by: str) -> pd.Series:
    return deals[group_by].astype("string").fillna(NO_VALUE).astype(str)


def _amounts(deals: pd.DataFrame) -> pd.Series:
    return deals[AMOUNT] if AMOUNT in deals else pd.Series(np.nan, index=deals.index)

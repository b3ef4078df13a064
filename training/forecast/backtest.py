"""Backtest of the revenue forecast: replay past period starts and compare with what closed.

At each origin (a past period start) the data is cut with `truncate_at(data, origin)`,
the next period is forecast from that state alone, and the forecast is compared with
the won value that actually closed in the period, valued by the forecast's booking rule
(`training.forecast.bookings`: realised amounts, an unknown amount at the median won
amount known at the origin, or 1 per won deal when counting). Beside the model:
weighted pipeline, trailing 3-period run-rate, seasonal naive and, on generated data,
the oracle (`features.synthetic.oracle_bookings`).

Model strategy: ONE model trained on `truncate_at(data, first origin)` is reused at every
origin, with the FeatureBuilder (its history tables: win rates, stage dwell, owner load)
refitted on the data cut at each origin. Why: retraining at every origin multiplies the
cost by the number of origins (minutes each on this machine), while the history tables
are what must move with the origin to stay point in time. The reused model never sees
an outcome after the first origin, so every origin is out of sample; later origins
measure a model up to N periods stale, a conservative test. While the data known at an
origin allows only a cold start (the stage-rate baseline) or no model at all, each origin
trains what it allows, until one trains a model that the later origins reuse; every row
says which model it used (`model_kind`, `model_trained_at`, `model_cold_start`), and an
origin without a model forecast keeps its baselines (`model_note` says why). The models
are trained here, in origin order; the origins themselves are independent and may run as
cluster tasks (`map_origins`). Over 300 lines because the replay, its per-origin models
and its baselines are one procedure whose parts only make sense together.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np
import pandas as pd

from features.build import FeatureBuilder
from features.errors import NotEnoughData
from features.schema import CanonicalData
from features.snapshots import deals_at
from features.timetravel import truncate_at
from features.winrates import stage_reach_win_rate
from training.forecast.bookings import BookingRule, booking_rule, realised_bookings
from training.forecast.config import ForecastConfig
from training.forecast.core import forecast
from training.forecast.periods import FREQS, period_end
from training.forecast.prepared import prepare
from training.models import Z90

STRATEGY = ("reuse: one model trained on the data as known at the first origin, FeatureBuilder history tables "
            "refitted on the data as known at each origin (point in time); retraining at every origin would "
            "cost one full training per origin, and the reused model sees no outcome after the first origin. "
            "While the data known at an origin only allows a cold start (or no model), each origin trains what "
            "it allows until a model is trained, which the later origins reuse (rows: model_kind, "
            "model_trained_at, model_cold_start)")
QUANTILES = (0.1, 0.5, 0.9)
MIN_NAIVE_ERRORS = 4


def backtest_origins(data: CanonicalData, freq: str, n_origins: int) -> pd.DatetimeIndex:
    """The last `n_origins` period starts whose period ends by the data end."""
    if freq not in FREQS:
        raise NotEnoughData(f"--freq must be one of {sorted(FREQS)}, not '{freq}'")
    last = data.data_end.to_period(FREQS[freq])
    candidates = pd.period_range(end=last, periods=int(n_origins) + 1, freq=FREQS[freq])
    starts = [p.start_time for p in candidates if (p + 1).start_time <= data.data_end]
    starts = starts[-int(n_origins):]
    first = data.deals["created_at"].min()
    if len(starts) < int(n_origins) or starts[0] <= first:
        raise NotEnoughData(f"{n_origins} {freq} origins need a deal created before the first one ({first.date()}) "
                            f"and whole periods before the data end ({data.data_end.date()}): ask for fewer origins")
    return pd.DatetimeIndex(starts)


def refit_builder(predictor, known: CanonicalData):
    """A shallow copy of the predictor whose FeatureBuilder is refitted on `known`."""
    old = predictor.builder
    builder = FeatureBuilder(smoothing=old.smoothing, activity_windows=old.activity_windows,
                             group_columns=old.group_columns).fit(known)
    if builder.feature_names_ != old.feature_names_:
        return predictor  # a column appeared or vanished: keep the original tables
    out = copy.copy(predictor)
    out.builder = builder
    return out


def backtest(data: CanonicalData, freq: str = "month", n_origins: int = 12, truth: pd.DataFrame | None = None,
             predictor=None, train_config=None, config: ForecastConfig | None = None, oracle_sims: int = 300,
             step: Callable[[str], None] = lambda _s: None, map_origins: Callable | None = None) -> dict:
    """Per-origin rows and the summary of model, baselines and (with `truth`) oracle.
    `map_origins(fn, origins)`: runs `fn(data, origin=o)` for each origin elsewhere (each
    origin is independent; `training.distributed.origin_mapper` makes each a Dask task)."""
    config = config or ForecastConfig(n_sims=1000)
    origins = backtest_origins(data, freq, n_origins)
    trained = _Trained(predictor, "given", []) if predictor is not None else None
    plan = {}  # origin -> the model it forecasts with, trained here in origin order
    for origin in origins:
        if predictor is None and (trained is None or trained.cold):  # cold start (or nothing) so far: train what this origin allows
            step(f"training on data known at {origin.date()}")
            trained = _train_at(data, origin, train_config) or trained
        plan[origin] = trained
    one = partial(_planned_origin, plan=plan, freq=freq, truth=truth, config=config, oracle_sims=oracle_sims)
    if map_origins is not None:
        step(f"{len(origins)} origins as cluster tasks")
        rows = list(map_origins(one, origins))
    else:
        rows = []
        for origin in origins:
            step(f"origin {origin.date()}")
            rows.append(one(data, origin=origin))
    frame = pd.DataFrame(rows)
    value_unit = next((r["value_unit"] for r in rows if r["value_unit"]), "amount")
    return {"freq": freq, "origins": [o.isoformat() for o in origins], "strategy": STRATEGY,
            "train_config": None if train_config is None else {"gap_days": train_config.gap_days,
                                                               "snapshot_freq": train_config.snapshot_freq},
            "value_unit": value_unit, "summary": summarise(frame, truth is not None),
            "rows": frame.assign(origin=frame["origin"].astype(str)).to_dict("records"),
            "definitions": DEFINITIONS}


@dataclass
class _Trained:
    """The model an origin forecasts with: when it was trained, and the run's messages."""

    predictor: object | None
    trained_at: str
    messages: list[str]

    @property
    def cold(self) -> bool:
        return self.predictor is None or self.predictor.kind != "lightgbm" or self.predictor.tiers.constant


def _train_at(data: CanonicalData, origin: pd.Timestamp, train_config) -> _Trained | None:
    """`fit_predictor` on the data known at `origin` (cold start where that is all it
    allows); None when it cannot even start (no closed deal yet)."""
    from training.train import TrainConfig, fit_predictor

    try:
        result = fit_predictor(truncate_at(data, origin), train_config or TrainConfig())
    except (NotEnoughData, ValueError, IndexError) as exc:
        return _Trained(None, origin.isoformat(), [f"no model at {origin.date()}: {exc}"])
    return _Trained(result.predictor, origin.isoformat(), list(result.messages))


def _planned_origin(data: CanonicalData, origin: pd.Timestamp, plan: dict, **kwargs) -> dict:
    """`_one_origin` with the model `plan` gives this origin (a cluster task runs this)."""
    return _one_origin(data, plan[origin], origin, **kwargs)


def _one_origin(data: CanonicalData, trained: _Trained, origin: pd.Timestamp, freq: str,
                truth: pd.DataFrame | None, config: ForecastConfig, oracle_sims: int) -> dict:
    end = period_end(origin, freq)
    known = truncate_at(data, origin)
    head = {"origin": origin, "end": end, "model_kind": None if trained.predictor is None else trained.predictor.kind,
            "model_trained_at": trained.trained_at, "model_cold_start": trained.cold,
            "model_messages": trained.messages}
    try:
        if trained.predictor is None:
            raise NotEnoughData(trained.messages[-1] if trained.messages else "no model")
        model = refit_builder(trained.predictor, known)
        fc = forecast(model, known, origin, 1, freq, config=config,
                      prepared=prepare(model, known, origin, freq, config=config, known=known))  # cut once
    except NotEnoughData as exc:  # no model, or an empty pipeline: this origin has no model forecast
        rule = booking_rule(known.deals, origin)
        actual = float(realised_bookings(data.deals, rule, [origin], [end])[0])
        row = {**head, "value_unit": rule.value_unit, "actual": actual, "model": np.nan, "model_p10": np.nan,
               "model_p50": np.nan, "model_p90": np.nan, "model_note": str(exc)}
        return {**row, **_baseline_columns(known, origin, end, freq, rule, data, truth, config, oracle_sims)}
    rule = fc.booking_rule
    total = fc.totals().iloc[0]
    actual = float(realised_bookings(data.deals, rule, [origin], [end])[0])
    row = {**head, "value_unit": fc.value_unit, "actual": actual,
           "model": total["expected"], "model_p10": total["p10"], "model_p50": total["p50"], "model_p90": total["p90"],
           "model_open_pipeline": total["open_pipeline"], "model_new_deals": total["new_deals"],
           "shock_relative_sd": fc.shock["relative_sd"], "shock_periods_used": fc.shock["periods_used"],
           "stale_open_count": fc.stale["stale_open_count"],
           "stale_open_value": fc.stale["stale_open_value"],
           "stale_expected_bookings": fc.stale["stale_expected_bookings"]}
    return {**row, **_baseline_columns(known, origin, end, freq, rule, data, truth, config, oracle_sims)}


def _baseline_columns(known: CanonicalData, origin: pd.Timestamp, end: pd.Timestamp, freq: str, rule: BookingRule,
                      data: CanonicalData, truth: pd.DataFrame | None, config: ForecastConfig, oracle_sims: int) -> dict:
    row = {}
    for name, values in baselines(known, origin, end, freq, rule).items():
        row.update({f"{name}{'' if k == 'point' else '_' + k}": v for k, v in values.items()})
    if truth is not None:
        from features.synthetic import oracle_bookings

        o = oracle_bookings(known, truth, origin, end, n_sims=oracle_sims, seed=config.seed)
        row.update({"oracle": o["total"], "oracle_p10": o["p10"], "oracle_p50": o["p50"], "oracle_p90": o["p90"],
                    "oracle_open_pipeline": o["open_pipeline"], "oracle_new_deals": o["new_deals"]})
    return row


# ---- baselines -------------------------------------------------------------------------

def baselines(known: CanonicalData, origin: pd.Timestamp, end: pd.Timestamp, freq: str, rule: BookingRule) -> dict:
    """{name: {point, p10, p50, p90}} from the data as known at the origin."""
    history = period_actuals(known, origin, freq, rule)
    return {"weighted_pipeline": weighted_pipeline(known, origin, end, rule),
            "run_rate_3": _naive(history, lambda a, i: a[i - 3:i].mean() if i >= 3 else np.nan),
            "seasonal_naive": _naive(history, _seasonal(freq))}


def period_actuals(known: CanonicalData, origin: pd.Timestamp, freq: str, rule: BookingRule) -> np.ndarray:
    """Booked value per full period from the first creation's period up to the origin."""
    first = known.deals["created_at"].min().to_period(FREQS[freq])
    labels = pd.period_range(first, origin.to_period(FREQS[freq]) - 1, freq=FREQS[freq])
    return realised_bookings(known.deals, rule, [p.start_time for p in labels], [(p + 1).start_time for p in labels])


def _seasonal(freq: str) -> Callable:
    year, quarter = (12, 3) if freq == "month" else (4, 1)

    def naive(a: np.ndarray, i: int) -> float:
        # the first period of the data is partial (ramp-up), so it never serves as a season
        return a[i - year] if i - year >= 1 else a[i - quarter] if i - quarter >= 1 else np.nan
    return naive


def _naive(history: np.ndarray, rule: Callable) -> dict:
    """Point = rule at the origin; P10/P90 = point x the 10th/90th percentile of
    actual / rule over earlier periods (as known at the origin), when at least 4 exist."""
    n = len(history)
    point = float(rule(history, n))
    past = np.array([rule(history, i) for i in range(n)])
    ok = np.isfinite(past) & (past > 0)
    ratios = history[ok] / past[ok]
    if len(ratios) < MIN_NAIVE_ERRORS or not np.isfinite(point):
        return {"point": point, "p10": np.nan, "p50": point, "p90": np.nan}
    lo, mid, hi = np.quantile(ratios, QUANTILES)
    return {"point": point, "p10": point * lo, "p50": point * mid, "p90": point * hi}


def weighted_pipeline(known: CanonicalData, origin: pd.Timestamp, end: pd.Timestamp, rule: BookingRule) -> dict:
    """Stage win rate (`stage_win_rates`) of each open deal's stage at the origin
    (`features.snapshots.deals_at`) x its booked value, over open deals whose expected close
    date (as known) falls in [origin, end); all open deals when the data has no expected
    close dates. Range: normal approximation of the independent Bernoulli sum."""
    state = deals_at(known, origin)
    rates = stage_win_rates(known)
    p = state["stage"].astype(str).map(rates).fillna(rates.get(known.meta.stages[0], 0.0)).to_numpy(dtype="float64")
    amount = rule.booked(state["amount"]).to_numpy(dtype="float64")
    due = _due(known, state, origin, end)
    mean = float((amount * p)[due].sum())
    sd = float(np.sqrt((amount ** 2 * p * (1 - p))[due].sum()))
    return {"point": mean, "p10": max(mean - Z90 * sd, 0.0), "p50": mean, "p90": mean + Z90 * sd}


def stage_win_rates(known: CanonicalData) -> pd.Series:
    """`features.winrates.stage_reach_win_rate` of the deals as known at the origin."""
    d = known.deals
    ev = known.stage_events
    first = pd.DataFrame({"deal_id": d["deal_id"], "stage": known.meta.stages[0]})
    reached = pd.concat([ev[["deal_id", "stage"]], first]) if ev is not None and len(ev) else first
    closed = d.loc[d["outcome"].isin(["won", "lost"]), ["deal_id", "outcome"]]
    return stage_reach_win_rate(reached, closed)


def _due(known: CanonicalData, state: pd.DataFrame, origin: pd.Timestamp, end: pd.Timestamp) -> np.ndarray:
    """Open deals whose expected close date (as known) is in [origin, end); all of them
    when the data has no expected close dates."""
    ev = known.stage_events
    if ev is None or "expected_close_date" not in ev or not ev["expected_close_date"].notna().any():
        return np.ones(len(state), bool)
    ecd = state["expected_close_date"]
    return ((ecd >= origin) & (ecd < end)).fillna(False).to_numpy(dtype=bool)


# ---- summary -------------------------------------------------------------------------

DEFINITIONS = {
    "wape": "sum |actual - point| / sum actual over origins (point = expectation; baselines: their point)",
    "bias": "sum (point - actual) / sum actual (positive: over-forecast)",
    "coverage_p10_p90": "share of origins whose actual falls inside [P10, P90] (over origins that have a range)",
    "pinball": "mean over origins of the mean pinball loss at P10, P50, P90 (in value units)",
    "pinball_scaled": "pinball / mean actual",
}


def metrics(actual, point, p10, p50, p90) -> dict:
    y, point = np.asarray(actual, float), np.asarray(point, float)
    q = np.column_stack([np.asarray(a, float) for a in (p10, p50, p90)])
    ok = np.isfinite(point)
    out = {"wape": float(np.abs(y[ok] - point[ok]).sum() / y[ok].sum()) if y[ok].sum() > 0 else None,
           "bias": float((point[ok] - y[ok]).sum() / y[ok].sum()) if y[ok].sum() > 0 else None,
           "origins": int(ok.sum())}
    ranged = np.isfinite(q).all(axis=1)
    out["coverage_p10_p90"] = float(((y >= q[:, 0]) & (y <= q[:, 2]))[ranged].mean()) if ranged.any() else None
    out["origins_with_range"] = int(ranged.sum())
    if ranged.any():
        loss = np.mean([np.maximum(a * (y - q[:, k]), (a - 1) * (y - q[:, k])) for k, a in enumerate(QUANTILES)], axis=0)
        out["pinball"] = float(loss[ranged].mean())
        out["pinball_scaled"] = float(loss[ranged].mean() / y[ranged].mean()) if y[ranged].mean() > 0 else None
    else:
        out["pinball"] = out["pinball_scaled"] = None
    return out


def summarise(frame: pd.DataFrame, with_oracle: bool) -> dict:
    def block(name: str) -> dict:
        return metrics(frame["actual"], frame[name], frame[f"{name}_p10"], frame[f"{name}_p50"], frame[f"{name}_p90"])

    out = {"model": block("model"),
           "baselines": {b: block(b) for b in ("weighted_pipeline", "run_rate_3", "seasonal_naive")}}
    if with_oracle:
        out["oracle"] = block("oracle")
    wapes = [v["wape"] for v in out["baselines"].values() if v["wape"] is not None]
    if wapes and out["model"]["wape"] is not None:
        out["model_wape_vs_best_baseline"] = out["model"]["wape"] / min(wapes)
    if with_oracle and out["oracle"]["wape"]:
        out["model_wape_vs_oracle"] = out["model"]["wape"] / out["oracle"]["wape"]
    return out

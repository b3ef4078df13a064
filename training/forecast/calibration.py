"""Calibration from past periods: bias factors (per month of the quarter) and the common
shock that widens the Monte Carlo ranges.

For each past period j (start s_j, fully observed before the as-of date): predicted
bookings (open pipeline at s_j x P(won in the period), and the new-deal model fitted at
s_j), the variance v_j the independent Monte Carlo would give (Bernoulli for open deals,
compound Poisson for new wins) and realised bookings y_j (valued by the booking rule).

Only past periods out of sample for the predictor calibrate (`out_of_sample_from`): the
open pipeline at s_j is valued exactly as the live forecast values it (same predictor, same
age shift), and no outcome of period j was a label its trees learned from. A period the
model was trained on is valued too well (its residuals fall inside the independent-draw
variance, and the shock to 0) or, early in an export, on a pipeline unlike today's (a
ramp-up of young deals only, dozens of percent off either way), and says nothing about
the error of a forecast.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from features.deadline import checkpoint
from features.schema import CanonicalData
from training.forecast.bookings import BookingRule
from training.forecast.config import ForecastConfig
from training.forecast.newdeals import NewDealModel
from training.forecast.periods import FREQS, period_end, position
from training.forecast.timing import TimingCorrection, fit_timing, month_of_quarter_intensity
from training.forecast.valuation import p_won_in

MIN_DAYS_BEFORE_PAST_PERIOD = pd.Timedelta(days=60)
HISTORY_COLUMNS = ["start", "predicted", "variance", "actual"]
PERIODS_PER_YEAR = {"month": 12, "quarter": 4}


def estimate_shock(predictor, known: CanonicalData, as_of: pd.Timestamp, freq: str, config: ForecastConfig,
                   rule: BookingRule, seasonal: bool = False) -> dict:
    """Bias factors and the common shock, from past periods fully observed before as_of.

    Bias factors = sum realised / sum predicted (clipped; 1 when disabled): for the open
    pipeline one overall, over the past periods valued with the month-of-quarter
    intensity (`timing.month_of_quarter_intensity`, measured on the same periods), times that
    intensity for each month of the quarter (`open_factors`; monthly periods); for new deals
    one overall. They absorb calibration drift over time, amounts that shrink before they
    are booked and timing bias. The new-deal factor
    comes from the past periods whose new-deal model was of the kind used at as_of
    (`seasonal`: `NewDealModel.season_` set, see newdeals): a model blind to the calendar
    errs by season, and those errors say nothing about a model that knows it; and only over
    a whole year of such periods (or `config.min_history_periods`, if more), so that the
    factor is not one season's error: with fewer, no new-deal correction.
    Common shock: with mu_j the prediction corrected by leave-one-out factors (so the
    errors are out of sample), shock^2 = max(0, mean(((y_j - mu_j)^2 - v_j') / mu_j^2)):
    the squared error beyond what independent deals explain, relative to the forecast,
    capped at `config.max_shock`; a period whose new deals were forecast by the other kind
    of new-deal model adds its open-pipeline error only (its new deals at their
    expectation): a calendar-blind model's seasonal misses would widen the range of one
    that knows the calendar. A given `config.shock` overrides the estimate.
    Past periods: the last `config.history_periods` before as_of, of them those out of
    sample for the predictor (`out_of_sample_from`); with fewer than
    `config.min_history_periods` of those (a short history, or quarters), all of them, in-sample
    ones included, and the note says so: the backtest's first quarterly origin (2 quarters out of
    sample) forecast +0.02 to +0.14 of the actual without any bias correction on 5 of 5 seeds,
    against -0.08 to +0.06 with the in-sample factor (the level of the open pipeline is set by
    the age shift at the data end, not fitted to those periods, so their bias still tells).
    """
    since = out_of_sample_from(predictor)
    n = config.history_periods
    if since is not None and len(past_period_starts(known, as_of, freq, n, since)) < config.min_history_periods:
        since = None  # too few out of sample (a short history, quarters): the in-sample ones too, stated
        note = (f"fewer than {config.min_history_periods} past periods out of sample for the model: calibrated on "
                f"past periods it was trained on too (their errors understate a forecast's)")
    else:
        note = None
    rows, timing = shock_history(predictor, known, as_of, freq, n, rule, since=since)
    out = calibrate(rows, freq, config, seasonal, timing.month_of_quarter)
    left_out = len(past_period_starts(known, as_of, freq, n)) - len(past_period_starts(known, as_of, freq, n, since))
    if note:
        out["note"] = f"{out['note']}; {note}" if out.get("note") else note
    return {**out, "out_of_sample_from": None if since is None else since.isoformat(),
            "in_sample_periods_left_out": left_out, "timing": timing.to_dict()}


def out_of_sample_from(predictor) -> pd.Timestamp | None:
    """The first date whose outcomes the predictor's close model never learned from: the label
    cutoff of the last time fold its model was fitted on (`info["folds"]`, `training.folds`):
    the train fold's for a LightGBM model (the validation fold only stops its boosting, the
    calibration fold fits a monotone map whose level the age shift, learned on the deals open at
    the data end, sets again), the fold before the test fold's for a constant (the stage baseline
    of a cold start, fitted on every fold but the test; the no-signal fallback, the calibration
    fold's rate). None without a fold record (a model fitted without folds, in sample everywhere)."""
    folds = (getattr(predictor, "info", None) or {}).get("folds") or {}
    names = list(folds)
    if not names:
        return None
    constant = getattr(predictor, "kind", None) != "lightgbm" or predictor.tiers.constant
    fitted = "train" if not constant and "train" in folds else names[max(len(names) - 2, 0)]
    return pd.Timestamp(folds[fitted]["labels_known_at"])


def calibrate(rows: pd.DataFrame, freq: str, config: ForecastConfig, seasonal: bool = False,
              months: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> dict:
    """`estimate_shock` from the past periods' rows (`shock_history`); `months`: the shape of
    the past monthly periods' bookings over months 1-3 of a quarter (`TimingCorrection.month_of_quarter`,
    `timing.month_of_quarter_intensity`), which values monthly periods (past and forecast) by their
    month of the quarter."""
    if len(rows) < config.min_history_periods:
        sd = config.default_shock if config.shock is None else config.shock
        return {"relative_sd": sd, "method": "default", "periods_used": len(rows),
                "open_factors": position_factors(1.0, freq, months), "open_factor": 1.0, "new_factor": 1.0,
                "note": f"fewer than {config.min_history_periods} past periods before the as-of date out of sample "
                        f"for the model: no bias correction, common shock {sd}"}
    rows = rows.assign(position=[position(s, freq) for s in rows["start"]])
    g = np.array([position_factors(1.0, freq, months)[p] for p in rows["position"]])
    rows = rows.assign(open_predicted=rows["open_predicted"] * g, open_variance=rows["open_variance"] * g ** 2)
    rows = rows.assign(predicted=rows["open_predicted"] + rows["new_predicted"],
                       variance=rows["open_variance"] + rows["new_variance"])
    clip = config.bias_clip if config.correct_bias else (1.0, 1.0)
    overall = _ratio(rows["open_actual"], rows["open_predicted"], clip)
    same_kind = rows.loc[rows["new_seasonal"] == seasonal]
    new_factor = _ratio(same_kind["new_actual"], same_kind["new_predicted"], clip) \
        if len(same_kind) >= max(PERIODS_PER_YEAR[freq], config.min_history_periods) else 1.0
    loo = np.array([_ratio(rows["open_actual"].drop(index=j), rows["open_predicted"].drop(index=j), clip)
                    for j in rows.index])  # each period's own intensity is in its open_predicted already
    mu = loo * rows["open_predicted"] + new_factor * rows["new_predicted"]
    # a period whose new deals were forecast by the other kind of new-deal model tells the
    # shock its open-pipeline error only (its new deals count at their expectation)
    other = (rows["new_seasonal"] != seasonal).to_numpy()
    actual = rows["open_actual"] + np.where(other, new_factor * rows["new_predicted"], rows["new_actual"])
    var = loo ** 2 * rows["open_variance"] + np.where(other, 0.0, new_factor ** 2 * rows["new_variance"])
    excess = ((actual - mu) ** 2 - var) / mu ** 2
    sd = float(min(np.sqrt(max(0.0, excess.mean())), config.max_shock)) if config.shock is None \
        else float(config.shock)
    return {"relative_sd": sd, "method": "estimated from past periods" if config.shock is None else "given",
            "periods_used": int(len(rows)), "open_factor": overall, "open_factors": position_factors(overall, freq, months),
            "new_factor": new_factor,
            "history": rows.assign(start=rows["start"].astype(str), corrected=mu).to_dict("records")}


def period_factors(shock: dict, per: pd.DataFrame, freq: str) -> list[float]:
    """The open-pipeline factor of each forecast period (by its month of the quarter)."""
    return [shock.get("open_factors", {}).get(position(pd.Period(p).start_time, freq), shock["open_factor"])
            for p in per["period"]]


def _ratio(actual: pd.Series, predicted: pd.Series, clip: tuple) -> float:
    total = predicted.sum()
    return float(np.clip(actual.sum() / total, *clip)) if total > 0 else 1.0


def position_factors(overall: float, freq: str, months: tuple[float, float, float]) -> dict[int, float]:
    """The open-pipeline factor per `position`: the overall bias factor times the
    month-of-quarter intensity (`timing.month_of_quarter_intensity`) for monthly periods; the
    overall one for quarters."""
    if freq != "month":
        return {0: overall}
    return {p: float(overall * months[p - 1]) for p in (1, 2, 3)}


def past_period_starts(known: CanonicalData, as_of: pd.Timestamp, freq: str, n: int,
                       since: pd.Timestamp | None = None) -> list[pd.Timestamp]:
    """Starts of the last `n` whole periods before as_of with 60 days of history before them
    (and, with `since`, starting on or after it)."""
    cur = as_of.to_period(FREQS[freq])
    first = known.deals["created_at"].min()
    starts = [(cur - k).start_time for k in range(n, 0, -1)]
    return [s for s in starts if s - first >= MIN_DAYS_BEFORE_PAST_PERIOD and period_end(s, freq) <= as_of
            and (since is None or s >= since)]


def shock_history(predictor, known: CanonicalData, as_of: pd.Timestamp, freq: str, n: int,
                  rule: BookingRule, since: pd.Timestamp | None = None) -> tuple[pd.DataFrame, TimingCorrection]:
    """Predicted mean, independent-draw variance and realised bookings of past periods (of
    the last `n`, those starting on or after `since`), and the time-to-close correction
    (`timing.fit_timing`) learned from the deals open at their starts, which values them."""
    starts = past_period_starts(known, as_of, freq, n, since)
    if not starts:
        return pd.DataFrame(columns=HISTORY_COLUMNS), TimingCorrection()
    open_part, timing = _open_pipeline_history(predictor, known, as_of, starts, freq, rule)
    rows = []
    for s in starts:
        checkpoint()
        new = _new_deal_history(known, s, period_end(s, freq), rule)
        o = open_part.loc[s] if s in open_part.index else pd.Series({"mu": 0.0, "var": 0.0, "y": 0.0})
        rows.append({"start": s, "predicted": o["mu"] + new["mu"], "variance": o["var"] + new["var"],
                     "actual": o["y"] + new["y"], "open_predicted": o["mu"], "open_variance": o["var"],
                     "open_actual": o["y"], "new_predicted": new["mu"], "new_variance": new["var"],
                     "new_actual": new["y"], "new_seasonal": new["seasonal"]})
    out = pd.DataFrame(rows)
    return out.loc[out["predicted"] > 0].reset_index(drop=True), timing


def _open_pipeline_history(predictor, known: CanonicalData, as_of: pd.Timestamp, starts: list[pd.Timestamp],
                           freq: str, rule: BookingRule) -> tuple[pd.DataFrame, TimingCorrection]:
    """Per past start (index): predicted mean `mu`, variance `var` and realised `y` of the
    deals open then, each deal valued at its amount known then with the time-to-close
    correction learned from the same deals (returned beside, with, for monthly periods, the
    month-of-quarter intensity of these periods: `timing.month_of_quarter_intensity`)."""
    feats = predictor.builder.transform(known, starts)  # many as-of dates in one pass
    scored = predictor.score_features(feats)
    deals = known.deals.set_index("deal_id")
    closed = deals["closed_at"].reindex(feats["deal_id"]).to_numpy(dtype="datetime64[us]")
    won_ever = (deals["outcome"] == "won").reindex(feats["deal_id"]).fillna(False).to_numpy(dtype=bool)
    timing = fit_timing(scored, closed, won_ever, as_of)
    scored = timing.apply(scored)
    end_of = {pd.Timestamp(s): period_end(s, freq) for s in starts}
    ends = pd.DatetimeIndex(scored["as_of"]).map(end_of).to_numpy(dtype="datetime64[us]")
    q = p_won_in(scored, scored["as_of"].to_numpy(), scored["as_of"].to_numpy(), ends)
    amount = rule.booked(feats["amount"].astype("float64")).to_numpy(dtype="float64")
    final = rule.booked(deals["amount"].reindex(feats["deal_id"])).to_numpy(dtype="float64")
    won = won_ever & (closed < ends)
    if freq == "month":  # the quarter-end pile-up, as the past months booked it
        timing = replace(timing, month_of_quarter=month_of_quarter_intensity(
            pd.DatetimeIndex(scored["as_of"]), q, amount, won))
    frame = pd.DataFrame({"start": scored["as_of"].to_numpy(), "mu": amount * q, "var": amount ** 2 * q * (1 - q),
                          "y": np.where(won, final, 0.0)})
    return frame.groupby("start").sum(), timing


def _new_deal_history(known: CanonicalData, start: pd.Timestamp, end: pd.Timestamp, rule: BookingRule) -> dict:
    """Predicted mean `mu`, variance `var` and realised `y` of the deals created after
    `start` and won before `end`, from the new-deal model fitted at `start` (`seasonal`: it knew the calendar)."""
    m = NewDealModel().fit(known, start)
    exp = m.expected_wins(pd.DatetimeIndex([start]), pd.DatetimeIndex([end]))[:, 0]
    window = m.windows(pd.DatetimeIndex([start]), pd.DatetimeIndex([end]))[0]
    mu = sum(exp[i] * m.mean_value(seg, window) for i, seg in enumerate(m.segments_))
    var = sum(exp[i] * float(m.pool_for(seg)["value"].to_numpy() ** 2 @ m.window_weights(seg, window))
              for i, seg in enumerate(m.segments_) if len(m.pool_for(seg)))
    d = known.deals
    won = d.loc[(d["created_at"] > start) & (d["outcome"] == "won") & (d["closed_at"] < end)]
    y = float(rule.booked(won["amount"]).sum()) if not m.counts_deals_ else float(len(won))
    return {"mu": mu, "var": var, "y": y, "seasonal": m.season_ is not None}

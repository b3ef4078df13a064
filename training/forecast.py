"""Revenue forecast with ranges: open pipeline + deals not created yet, by period.

For each period (the first is the remainder of the period containing the as-of date):
- open pipeline: every deal open at T contributes amount x P(won with close in the
  period) from the predictor (close probability x log-normal time to a won close);
- new deals: `training.newdeals.NewDealModel` (creation rate x cohort win curve x
  won-amount pool), estimated from data before T only.
P10/P50/P90 come from a seeded Monte Carlo over deal outcomes, close timing and Poisson
new-win counts, plus a common shock per simulation (see `estimate_shock`): deals are
not independent in real life (a slow quarter hits every deal), and intervals that
assume they are come out too narrow. The expectation reported is the analytic one
(no shock), so roll-ups add up to it exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from features.errors import LeadscoreError, NotEnoughData
from features.schema import CanonicalData
from features.timetravel import truncate_at
from training.forecast_risk import risk_list, target_report
from training.models import cdf_won_by, lognormal_params
from training.newdeals import ALL, NewDealModel
from training.periods import DAY, FREQS, make_periods

MAX_GROUPS = 500
LOGQ = ["log_close_days_p10", "log_close_days_p50", "log_close_days_p90"]


@dataclass
class ForecastConfig:
    n_sims: int = 2000
    seed: int = 0
    shock: float | None = None  # relative sd of the common shock; None: estimate from history
    history_periods: int = 12  # past periods used to estimate the shock
    default_shock: float = 0.15  # used when fewer than `min_history_periods` past periods exist
    min_history_periods: int = 3
    correct_bias: bool = True  # scale each part by its realised / predicted ratio over past periods
    bias_clip: tuple = (0.5, 2.0)
    max_shock: float = 0.5  # cap on the estimated relative sd (a few wild past periods must not explode the range)
    low_probability: float = 0.2  # risk list: P(won) below this
    quiet_days: int = 14  # risk list: no activity for more than this
    block_paths: int = 2_000_000  # deals x simulations drawn at once (memory bound)


@dataclass
class Forecast:
    as_of: pd.Timestamp
    freq: str
    periods: pd.DataFrame  # period, start, end, partial
    table: pd.DataFrame  # one row per (period, group): expected, open_pipeline, new_deals, p10, p50, p90
    deals: pd.DataFrame  # open deals: amount, probability, expected value per period
    risk: pd.DataFrame
    shock: dict
    new_deal_model: dict
    value_unit: str  # "amount" or "won deals"
    group_by: str | None = None
    targets: pd.DataFrame | None = None
    history: pd.DataFrame | None = None  # realised bookings of past periods (for the chart)
    notes: list[str] = field(default_factory=list)

    def totals(self) -> pd.DataFrame:
        return self.table.loc[self.table["group"] == ALL].reset_index(drop=True)


# ---- periods ---------------------------------------------------------------------------

def check_as_of(data: CanonicalData, as_of) -> pd.Timestamp:
    try:
        as_of = pd.Timestamp(as_of)
    except (ValueError, TypeError):
        raise LeadscoreError(f"--as-of '{as_of}' is not a date: use YYYY-MM-DD") from None
    first, end = data.deals["created_at"].min(), data.data_end
    if data.meta.static:
        raise NotEnoughData("a static lead export has no dates: a revenue forecast needs created/closed dates")
    if pd.isna(first) or as_of < first or as_of > end:
        raise NotEnoughData(f"as-of date {as_of.date()} is outside the data ({first} to {end}): "
                            f"choose a date inside that range")
    return as_of


# ---- the forecast --------------------------------------------------------------------

def forecast(predictor, data: CanonicalData, as_of, periods: int = 3, freq: str = "month",
             group_by: str | None = None, targets: pd.DataFrame | None = None,
             config: ForecastConfig | None = None) -> Forecast:
    """Forecast bookings for `periods` periods from `as_of` with what was known then."""
    config = config or ForecastConfig()
    as_of = check_as_of(data, as_of)
    per = make_periods(as_of, periods, freq)
    _check_group(data, group_by)
    known = truncate_at(data, as_of)
    pipe = open_pipeline(predictor, known, as_of, per, group_by)
    newm = NewDealModel().fit(known, as_of, group_by=group_by)
    value_unit = "won deals" if pipe.attrs["counts_deals"] else "amount"
    shock = estimate_shock(predictor, known, as_of, freq, config)
    apply_calibration(pipe, newm, shock, per, freq)
    sims = simulate(pipe, newm, per, config, shock["relative_sd"])
    table = summarise(pipe, newm, per, sims, group_by)
    notes = _notes(per, predictor, as_of, pipe, value_unit)
    fc = Forecast(as_of=as_of, freq=freq, periods=per, table=table, deals=pipe, risk=pd.DataFrame(),
                  shock=shock, new_deal_model=newm.describe(), value_unit=value_unit, group_by=group_by,
                  history=realised_history(known, as_of, freq, 6), notes=notes)
    fc.risk = risk_list(pipe, known, as_of, per.iloc[0], config)
    if targets is not None:
        fc.targets = target_report(fc, known, targets, newm)
    return fc


def _check_group(data: CanonicalData, group_by: str | None) -> None:
    if group_by is None:
        return
    if group_by not in data.deals:
        cols = [c for c in ("owner", "team", "region", "product", "segment", "source") if c in data.deals]
        raise LeadscoreError(f"--group-by '{group_by}' is not a column of deals: use one of {cols}")
    n = data.deals[group_by].nunique()
    if n > MAX_GROUPS:
        raise LeadscoreError(f"--group-by '{group_by}' has {n} values (at most {MAX_GROUPS}): group by a "
                             f"coarser column such as team, region or segment")


def open_pipeline(predictor, data: CanonicalData, as_of: pd.Timestamp, per: pd.DataFrame,
                  group_by: str | None) -> pd.DataFrame:
    """One row per deal open at `as_of`: amount known then, P(won), timing and the
    expected value per period (columns exp_0..exp_{n-1})."""
    if predictor.static or predictor.time_model is None:
        raise NotEnoughData("this model was trained on a lead export without dates (static mode): a revenue "
                            "forecast needs a model trained on dated deals")
    feats = predictor.features(data, as_of)
    if feats.empty:
        raise NotEnoughData(f"the pipeline is empty: no deal is open at {as_of.date()}, so there is nothing to "
                            f"forecast from; choose an as-of date with open deals")
    scored = predictor.score_features(feats)
    deals = data.deals.set_index("deal_id")
    out = scored[["deal_id", "close_probability"] + LOGQ].copy()
    amount = feats["amount"].to_numpy(dtype="float64")
    known = data.deals.loc[data.deals["outcome"] == "won", "amount"].dropna()
    counts_deals = not np.isfinite(amount).any() and known.empty
    out["amount_known"] = np.isfinite(amount)
    fill = 1.0 if counts_deals else float(known.median()) if len(known) else float(np.nanmedian(amount))
    out["amount"] = np.where(np.isfinite(amount), amount, fill)
    out["value"] = out["amount"]  # what a win books
    out["group"] = deals[group_by].reindex(out["deal_id"]).astype("string").fillna("(none)").astype(str).to_numpy() \
        if group_by else ALL
    out["segment"] = deals["segment"].reindex(out["deal_id"]).astype("string").to_numpy() if "segment" in deals else None
    for col in ("stage", "days_in_stage", "close_date_pushes", "close_date_days_pushed",
                "days_since_last_activity", "days_to_expected_close"):
        out[col] = feats[col].to_numpy() if col in feats else np.nan
    for k, row in per.iterrows():
        out[f"p_{k}"] = p_won_in(out, as_of, row["start"], row["end"])
        out[f"exp_{k}"] = out["value"] * out[f"p_{k}"]  # apply_calibration rescales it per period
    out.attrs["counts_deals"] = bool(counts_deals)
    out.attrs["amount_imputed"] = int((~out["amount_known"]).sum()) if not counts_deals else 0
    return out.reset_index(drop=True)


def p_won_in(scored: pd.DataFrame, as_of, start, end) -> np.ndarray:
    """P(won with close in [start, end)) per row, the rows scored at `as_of` (scalar or array)."""
    as_of = np.asarray(pd.to_datetime(as_of), dtype="datetime64[us]") if not np.isscalar(as_of) \
        and not isinstance(as_of, pd.Timestamp) else np.datetime64(pd.Timestamp(as_of), "us")
    d0 = np.clip((np.asarray(start, dtype="datetime64[us]") - as_of) / np.timedelta64(1, "D"), 0, None)
    d1 = np.clip((np.asarray(end, dtype="datetime64[us]") - as_of) / np.timedelta64(1, "D"), 0, None)
    logq = scored[LOGQ].to_numpy()
    return scored["close_probability"].to_numpy() * (cdf_won_by(logq, d1) - cdf_won_by(logq, d0))


# ---- Monte Carlo -----------------------------------------------------------------------

def simulate(pipe: pd.DataFrame, newm: NewDealModel, per: pd.DataFrame, config: ForecastConfig,
             relative_sd: float) -> dict:
    """Simulated bookings (n_sims, n_groups, n_periods) for the open pipeline and new deals.

    One standard-normal draw z per simulation moves both parts together: a logit shift
    of every open deal's P(won) of size relative_sd / mean(1 - p) (so the expected
    open-pipeline bookings move by about relative_sd x z) and a creation multiplier
    exp(relative_sd z - relative_sd^2 / 2) (mean 1) on the new-win counts."""
    rng = np.random.default_rng([int(config.seed), 11])
    groups = sorted(set(pipe["group"]) | set(newm.pool_["group"]))
    z = rng.standard_normal(config.n_sims)
    open_sims = _simulate_open(pipe, per, groups, z, relative_sd, config, rng)
    new_sims = _simulate_new(newm, per, groups, z, relative_sd, config, rng)
    return {"groups": groups, "open": open_sims, "new": new_sims}


def _logit_shift_scale(pipe: pd.DataFrame, relative_sd: float) -> float:
    w = pipe["amount"].to_numpy() * pipe["close_probability"].to_numpy()
    one_minus_p = np.average(1 - pipe["close_probability"].to_numpy(), weights=w) if w.sum() > 0 else 0.5
    return relative_sd / max(one_minus_p, 0.05)


def _simulate_open(pipe, per, groups, z, relative_sd, config, rng) -> np.ndarray:
    n, n_per, n_grp, n_sims = len(pipe), len(per), len(groups), len(z)
    out = np.zeros((n_sims, n_grp, n_per))
    p = np.clip(pipe["close_probability"].to_numpy(), 1e-6, 1 - 1e-6)
    mu, sigma = lognormal_params(pipe[LOGQ].to_numpy())
    as_of = per["start"].iloc[0]
    bounds = ((pd.DatetimeIndex(per["start"]).append(pd.DatetimeIndex(per["end"][-1:])) - as_of) / DAY).to_numpy()
    amount = pipe["value"].to_numpy()
    factor = np.asarray(pipe.attrs.get("period_factors", np.ones(n_per)), dtype="float64")
    gcode = pd.Index(groups).get_indexer(pipe["group"])
    shift = _logit_shift_scale(pipe, relative_sd) * z
    block = max(1, config.block_paths // max(n, 1))
    for first in range(0, n_sims, block):
        b = min(block, n_sims - first)
        p_sim = expit(logit(p)[None, :] + shift[first:first + b, None])
        won = rng.random((b, n)) < p_sim
        days = np.expm1(mu[None, :] + sigma[None, :] * rng.standard_normal((b, n)))
        k = np.searchsorted(bounds, days, side="right") - 1
        hit = won & (k >= 0) & (k < n_per)
        sim = np.broadcast_to(np.arange(b)[:, None], (b, n))[hit]
        idx = (sim * n_grp + np.broadcast_to(gcode, (b, n))[hit]) * n_per + k[hit]
        vals = np.broadcast_to(amount, (b, n))[hit] * factor[k[hit]]
        out[first:first + b] = np.bincount(idx, vals, minlength=b * n_grp * n_per).reshape(b, n_grp, n_per)
    return out


def _simulate_new(newm: NewDealModel, per, groups, z, relative_sd, config, rng) -> np.ndarray:
    n_per, n_grp, n_sims = len(per), len(groups), len(z)
    out = np.zeros((n_sims, n_grp, n_per))
    expected = newm.expected_wins(pd.DatetimeIndex(per["start"]), pd.DatetimeIndex(per["end"]))
    mult = np.exp(relative_sd * z - relative_sd ** 2 / 2)
    gindex = pd.Index(groups)
    for s_idx, segment in enumerate(newm.segments_):
        pool = newm.pool_for(segment)
        if pool.empty:
            continue
        values, gcode = pool["value"].to_numpy(), gindex.get_indexer(pool["group"])
        counts = rng.poisson(mult[:, None] * expected[s_idx][None, :])  # (n_sims, n_per)
        draws = rng.integers(0, len(pool), counts.sum())
        sim = np.repeat(np.repeat(np.arange(n_sims), n_per), counts.ravel())
        k = np.repeat(np.tile(np.arange(n_per), n_sims), counts.ravel())
        idx = (sim * n_grp + gcode[draws]) * n_per + k
        out += np.bincount(idx, values[draws], minlength=n_sims * n_grp * n_per).reshape(n_sims, n_grp, n_per)
    return out


# ---- summaries ---------------------------------------------------------------------------

def summarise(pipe: pd.DataFrame, newm: NewDealModel, per: pd.DataFrame, sims: dict,
              group_by: str | None) -> pd.DataFrame:
    """Rows per (period, group) plus the total (group "(all)"): analytic expectations
    (open pipeline, new deals, their sum) and simulated P10/P50/P90."""
    groups = sims["groups"]
    n_per = len(per)
    exp_open = pipe.groupby("group")[[f"exp_{k}" for k in range(n_per)]].sum().reindex(groups).fillna(0.0).to_numpy()
    expected = newm.expected_wins(pd.DatetimeIndex(per["start"]), pd.DatetimeIndex(per["end"]))
    exp_new = np.zeros((len(groups), n_per))
    for s_idx, segment in enumerate(newm.segments_):
        share = newm.value_by_group(segment).reindex(groups).fillna(0.0).to_numpy()
        exp_new += share[:, None] * expected[s_idx][None, :]
    total = sims["open"] + sims["new"]
    rows = []
    for k, prow in per.iterrows():
        def row(group, e_open, e_new, draws):
            q = np.quantile(draws, [0.1, 0.5, 0.9])
            return {"period": prow["period"], "start": prow["start"], "end": prow["end"],
                    "partial": bool(prow["partial"]), "group": group, "expected": e_open + e_new,
                    "open_pipeline": e_open, "new_deals": e_new, "p10": q[0], "p50": q[1], "p90": q[2],
                    "open_pipeline_p10": np.quantile(draws_open, 0.1), "open_pipeline_p90": np.quantile(draws_open, 0.9)}
        draws_open = sims["open"][:, :, k].sum(axis=1)
        rows.append(row(ALL, float(exp_open[:, k].sum()), float(exp_new[:, k].sum()), total[:, :, k].sum(axis=1)))
        if group_by:
            for g_idx, group in enumerate(groups):
                draws_open = sims["open"][:, g_idx, k]
                rows.append(row(group, float(exp_open[g_idx, k]), float(exp_new[g_idx, k]), total[:, g_idx, k]))
    return pd.DataFrame(rows)


def realised_history(data: CanonicalData, as_of: pd.Timestamp, freq: str, n: int) -> pd.DataFrame:
    """Won value closed in each of the `n` full periods before the one containing as_of,
    and in the current period so far."""
    cur = as_of.to_period(FREQS[freq])
    labels = [cur - k for k in range(n, -1, -1)]
    won = data.deals.loc[(data.deals["outcome"] == "won") & (data.deals["closed_at"] <= as_of)]
    amount = won["amount"].fillna(won["amount"].median()) if won["amount"].notna().any() else pd.Series(1.0, index=won.index)
    period = won["closed_at"].dt.to_period(FREQS[freq]).astype(str)
    sums = amount.groupby(period).sum()
    first = data.deals["created_at"].min()
    return pd.DataFrame({"period": [str(p) for p in labels],
                         "actual": [float(sums.get(str(p), 0.0)) if (p + 1).start_time > first else np.nan
                                    for p in labels],
                         "so_far": [p == cur for p in labels]})


def position(start: pd.Timestamp, freq: str) -> int:
    """Month of the quarter (1-3) of a monthly period; 0 for quarters. Won closes pile up
    before quarter ends, and a timing model that misses it errs by month of quarter."""
    return (pd.Timestamp(start).month - 1) % 3 + 1 if freq == "month" else 0


def _ratio(actual: pd.Series, predicted: pd.Series, clip: tuple) -> float:
    total = predicted.sum()
    return float(np.clip(actual.sum() / total, *clip)) if total > 0 else 1.0


def estimate_shock(predictor, data: CanonicalData, as_of: pd.Timestamp, freq: str,
                   config: ForecastConfig) -> dict:
    """Bias factors and the common shock, from past periods fully observed before as_of.

    For each past period j (start s_j): predicted bookings (open pipeline at s_j x
    P(won in the period), and the new-deal model fitted at s_j), the variance v_j the
    independent Monte Carlo would give (Bernoulli for open deals, compound Poisson for
    new wins) and realised bookings y_j.
    Bias factors = sum realised / sum predicted (clipped; 1 when disabled): for the open
    pipeline one per month of the quarter (`position`; overall when fewer than 2 past
    periods share it), for new deals one overall. They absorb calibration drift over
    time, amounts that shrink before they are booked and timing bias.
    Common shock: with mu_j the prediction corrected by leave-one-out factors (so the
    errors are out of sample), shock^2 = max(0, mean(((y_j - mu_j)^2 - v_j') / mu_j^2)):
    the squared error beyond what independent deals explain, relative to the forecast,
    capped at `config.max_shock`. A given `config.shock` overrides the estimate.
    """
    rows = shock_history(predictor, data, as_of, freq, config.history_periods)
    if len(rows) < config.min_history_periods:
        sd = config.default_shock if config.shock is None else config.shock
        return {"relative_sd": sd, "method": "default", "periods_used": len(rows), "open_factors": {},
                "open_factor": 1.0, "new_factor": 1.0,
                "note": f"fewer than {config.min_history_periods} past periods before the as-of date: no bias "
                        f"correction, common shock {sd}"}
    rows["position"] = [position(s, freq) for s in rows["start"]]
    clip = config.bias_clip if config.correct_bias else (1.0, 1.0)
    overall = _ratio(rows["open_actual"], rows["open_predicted"], clip)
    new_factor = _ratio(rows["new_actual"], rows["new_predicted"], clip)
    by_pos = {int(p): _ratio(g["open_actual"], g["open_predicted"], clip) if len(g) >= 2 else overall
              for p, g in rows.groupby("position")}
    loo = np.array([_loo_factor(rows, j, clip) for j in range(len(rows))])
    mu = loo * rows["open_predicted"] + new_factor * rows["new_predicted"]
    var = loo ** 2 * rows["open_variance"] + new_factor ** 2 * rows["new_variance"]
    excess = ((rows["actual"] - mu) ** 2 - var) / mu ** 2
    sd = float(min(np.sqrt(max(0.0, excess.mean())), config.max_shock)) if config.shock is None \
        else float(config.shock)
    return {"relative_sd": sd, "method": "estimated from past periods" if config.shock is None else "given",
            "periods_used": int(len(rows)), "open_factor": overall, "open_factors": by_pos,
            "new_factor": new_factor,
            "history": rows.assign(start=rows["start"].astype(str), corrected=mu).to_dict("records")}


def _loo_factor(rows: pd.DataFrame, j: int, clip: tuple) -> float:
    """Open-pipeline factor for past period j estimated without period j."""
    others = rows.drop(index=rows.index[j])
    same = others.loc[others["position"] == rows["position"].iloc[j]]
    use = same if len(same) >= 2 else others
    return _ratio(use["open_actual"], use["open_predicted"], clip)


def apply_calibration(pipe: pd.DataFrame, newm: NewDealModel, shock: dict, per: pd.DataFrame, freq: str) -> None:
    """Scale each period's open-deal expectation by its factor and new-win values by theirs."""
    factors = [shock.get("open_factors", {}).get(position(pd.Period(p).start_time, freq), shock["open_factor"])
               for p in per["period"]]
    for k, f in enumerate(factors):
        pipe[f"exp_{k}"] = pipe["value"] * pipe[f"p_{k}"] * f
    pipe.attrs["period_factors"] = factors
    newm.scale_values(shock["new_factor"])


def shock_history(predictor, data: CanonicalData, as_of: pd.Timestamp, freq: str, n: int) -> pd.DataFrame:
    """Predicted mean, independent-draw variance and realised bookings of past periods."""
    cur = as_of.to_period(FREQS[freq])
    first = data.deals["created_at"].min()
    starts = [(cur - k).start_time for k in range(n, 0, -1)]
    starts = [s for s in starts if s - first >= pd.Timedelta(days=60) and (s.to_period(FREQS[freq]) + 1).start_time <= as_of]
    if not starts:
        return pd.DataFrame(columns=["start", "predicted", "variance", "actual"])
    feats = predictor.builder.transform(data, starts)  # many as-of dates in one pass
    scored = predictor.score_features(feats)
    ends = np.array([(pd.Timestamp(s).to_period(FREQS[freq]) + 1).start_time for s in scored["as_of"]],
                    dtype="datetime64[us]")
    q = p_won_in(scored, scored["as_of"].to_numpy(), scored["as_of"].to_numpy(), ends)
    amount = feats["amount"].to_numpy(dtype="float64")
    deals = data.deals.set_index("deal_id")
    won_known = deals["outcome"] == "won"
    fill = float(deals.loc[won_known, "amount"].median()) if deals.loc[won_known, "amount"].notna().any() else 1.0
    amount = np.where(np.isfinite(amount), amount, fill)
    final = deals["amount"].reindex(feats["deal_id"]).fillna(fill).to_numpy(dtype="float64")
    closed = deals["closed_at"].reindex(feats["deal_id"]).to_numpy(dtype="datetime64[us]")
    won = won_known.reindex(feats["deal_id"]).fillna(False).to_numpy(dtype=bool) & (closed < ends)
    frame = pd.DataFrame({"start": scored["as_of"].to_numpy(), "mu": amount * q, "var": amount ** 2 * q * (1 - q),
                          "y": np.where(won, final, 0.0)})
    per_start = frame.groupby("start").sum()
    rows = []
    for s in starts:
        e = (s.to_period(FREQS[freq]) + 1).start_time
        m = NewDealModel().fit(data, s)
        exp = m.expected_wins(pd.DatetimeIndex([s]), pd.DatetimeIndex([e]))[:, 0]
        new_mu = sum(exp[i] * m.mean_value(seg) for i, seg in enumerate(m.segments_))
        new_var = sum(exp[i] * float((m.pool_for(seg)["value"] ** 2).mean()) for i, seg in enumerate(m.segments_)
                      if len(m.pool_for(seg)))
        d = data.deals
        new_won = d.loc[(d["created_at"] > s) & (d["outcome"] == "won") & (d["closed_at"] < e)]
        new_y = float(new_won["amount"].fillna(fill).sum()) if not m.counts_deals_ else float(len(new_won))
        o = per_start.loc[s] if s in per_start.index else pd.Series({"mu": 0.0, "var": 0.0, "y": 0.0})
        rows.append({"start": s, "predicted": o["mu"] + new_mu, "variance": o["var"] + new_var,
                     "actual": o["y"] + new_y, "open_predicted": o["mu"], "open_variance": o["var"],
                     "open_actual": o["y"], "new_predicted": new_mu, "new_variance": new_var, "new_actual": new_y})
    out = pd.DataFrame(rows)
    return out.loc[out["predicted"] > 0].reset_index(drop=True)


def _notes(per: pd.DataFrame, predictor, as_of: pd.Timestamp, pipe: pd.DataFrame, value_unit: str) -> list[str]:
    notes = []
    if per["partial"].iloc[0]:
        notes.append(f"the first period {per['period'].iloc[0]} is the remainder of the current period: from "
                     f"{as_of} to {per['end'].iloc[0]} (wins closed earlier in it are not forecast; see targets)")
    if value_unit == "won deals":
        notes.append("no deal amounts in the data: the forecast counts won deals, not money")
    elif pipe.attrs.get("amount_imputed"):
        notes.append(f"{pipe.attrs['amount_imputed']} open deals had no amount known at the as-of date: "
                     f"valued at the median won amount")
    trained_end = (getattr(predictor, "info", {}) or {}).get("data_end")
    if trained_end and pd.Timestamp(trained_end) > as_of:
        notes.append(f"the model was trained on data up to {trained_end}, after the as-of date: its probabilities "
                     f"at this date are in-sample (use `leadscore backtest` for an honest accuracy record)")
    return notes

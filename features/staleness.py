"""Stale deals, learned from the data: the one home of the stale rule.

A deal is **stale** at T when it has been open longer than `give_up_age` (as known at T):
the age from which fewer than `LOST_BELOW` of the deals still open went on to win (at most
the longest won age, where the empirical chance is zero: without zombies the two are
equal), or has stayed in its current stage longer than any deal that went on to win ever
stayed in that stage. The score (`training.predictor`), the pipeline metrics
(`features.analytics`) and the forecast (`training.forecast`) all flag deals with
`StaleRule.flag`; training labels a snapshot row whose deal is still open at its fold's
label cutoff and already past `give_up_age` then as lost (`lost_at_cutoff`): the same age.
Leaving these rows out (right-censored) would teach the model that old deals are the ones
that win (losses are often marked early, wins late, so among *closed* old deals nearly
every one was won).

Method (`win_curve`): the chance that a deal open at age a is eventually won,
P(win | open at a) = (CIF_won(inf) - CIF_won(a)) / S(a), with the Aalen-Johansen
cumulative incidence of a win (competing risks: won, lost; deals still open at T are
right-censored at their age at T) and S the Kaplan-Meier chance of still being open,
in whole days, vectorised with numpy. It is reported beside the rule (`to_dict`); it
falls to 0 beyond the longest won age, which is where the rule starts. Its value at the
longest won age (`p_win_beyond`) caps the model's P(won) of deals older than every win
(`StaleRule.cap`): the model learned from younger deals and must not extrapolate to them.
The served P(won) of every open deal takes its level by age from the curve
(`fit_age_shift`, `StaleRule.calibrate`, applied by the predictor, so the score and the
forecast's open pipeline use the same probabilities).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import repeat

import numpy as np
import pandas as pd

from features.arrays import SMALL
from features.schema import TIMESTAMP_DTYPE, CanonicalData
from features.snapshots import running_state, stage_spells

MIN_WON = 10  # fewer won deals than this: no rule (a maximum of a handful of wins says nothing)
LOST_BELOW = 0.02  # training labels: still open at an age where fewer than 2 % of open deals went on to win: lost
CURVE_AGES = (0, 30, 60, 90, 180, 365, 730)
MIN_BAND, MAX_BANDS = 50, 20  # `fit_age_shift`: open deals per age band (at least), bands (at most)
SHIFT_LIMIT = 12.0  # log-odds: a shift to a curve of 0 stops here (P(won) x ~6e-6)
DAY = np.timedelta64(1, "D")


@dataclass(frozen=True)
class StaleRule:
    """The longest creation-to-win age and, per stage, the longest stay of a deal that
    went on to win, among deals won by `as_of`; `curve`: `win_curve` at `CURVE_AGES`."""

    as_of: pd.Timestamp | None
    won_deals: int
    max_won_age_days: float | None  # None: too few wins for a rule
    max_won_stage_days: dict[str, float] = field(default_factory=dict)
    curve: dict[int, float | None] = field(default_factory=dict)
    # P(eventually won | still open at the longest won age): the most a deal older than every win gets
    p_win_beyond: float | None = None
    # `fit_age_shift`: log-odds shift of the model's P(won) by deal age (interpolated between `shift_ages`)
    shift_ages: tuple[float, ...] = ()
    shifts: tuple[float, ...] = ()
    give_up_age_days: float | None = None  # `give_up_age` at as_of: stale from this age (None: the longest win)

    def calibrate(self, p: np.ndarray, age_days) -> np.ndarray:
        """P(won) with the log-odds shift `fit_age_shift` learned at this deal age (linear
        between the bands' median ages, flat beyond them), then `cap`ped: the probability
        the predictor serves. Unchanged without a shift (too few open deals, or an old rule)."""
        p = np.asarray(p, dtype="float64")
        if self.shift_ages and len(p):
            age = np.asarray(age_days, dtype="float64")
            shift = np.interp(np.nan_to_num(age, nan=0.0), self.shift_ages, self.shifts)
            p = _expit(_logit(p) + shift)
        return self.cap(p, age_days)

    def cap(self, p: np.ndarray, age_days) -> np.ndarray:
        """P(won) of deals older than every win capped at `p_win_beyond` (the model learned
        from younger deals and must not extrapolate to these); others unchanged."""
        if self.max_won_age_days is None or self.p_win_beyond is None:
            return p
        old = np.asarray(age_days, dtype="float64") > self.max_won_age_days
        return np.where(old, np.minimum(p, self.p_win_beyond), p)

    def flag(self, age_days, days_in_stage=None, stage=None) -> tuple[np.ndarray, np.ndarray]:
        """(stale: bool per deal, reason: words per deal, None where not stale)."""
        age = np.asarray(age_days, dtype="float64")
        stale = np.zeros(len(age), dtype=bool)
        reason = np.full(len(age), None, dtype=object)
        if self.max_won_age_days is None:
            return stale, reason
        limit = self.max_won_age_days if self.give_up_age_days is None else self.give_up_age_days
        old = age > limit
        if old.any():  # words only where needed: a request's deal is rarely old
            beyond = age > self.max_won_age_days
            reason[beyond] = ("open " + _days(age[beyond])
                              + f"; no won deal took longer than {self.max_won_age_days:.0f} days")
            late = old & ~beyond
            reason[late] = ("open " + _days(age[late]) + f"; fewer than {LOST_BELOW:.0%} of the deals still open at "
                            f"{limit:.0f} days went on to win")
        stale |= old
        if days_in_stage is None or stage is None or not self.max_won_stage_days:
            return stale, reason
        dwell = np.asarray(days_in_stage, dtype="float64")
        names = np.asarray(stage, dtype=object)
        limit = by_name(self.max_won_stage_days, names)
        long = ~old & (dwell > limit)  # NaN limit (stage never on a win's way): no flag
        if long.any():
            lim = pd.Series(limit[long]).round().astype("int64").astype(str).to_numpy()
            reason[long] = (_days(dwell[long]) + " in " + names[long].astype(str)
                            + "; no won deal stayed longer than " + lim + " days there")
        return stale | long, reason

    def flag_features(self, feats, stages: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """`flag` of feature rows (a frame or {name: array} with deal_age_days and, when
        present, days_in_stage and stage_index as `FeatureBuilder` makes them)."""
        if "deal_age_days" not in feats:
            n = len(feats) if isinstance(feats, pd.DataFrame) else len(next(iter(feats.values()), []))
            return np.zeros(n, dtype=bool), np.full(n, None, dtype=object)
        stage = None
        if "stage_index" in feats and "days_in_stage" in feats:
            idx = np.asarray(feats["stage_index"], dtype="float64")
            ok = np.isfinite(idx) & (idx >= 0) & (idx < len(stages))
            stage = np.where(ok, np.asarray(list(stages) + [None], dtype=object)[np.where(ok, idx, len(stages))
                                                                                   .astype("int64")], None)
        return self.flag(feats["deal_age_days"], feats["days_in_stage"] if stage is not None else None, stage)

    def to_dict(self) -> dict:
        return {"as_of": None if self.as_of is None else self.as_of.isoformat(), "won_deals": self.won_deals,
                "max_won_age_days": self.max_won_age_days, "max_won_stage_days": dict(self.max_won_stage_days),
                "p_win_if_open_at_age": {str(k): v for k, v in self.curve.items()},
                "p_win_beyond_longest_win": self.p_win_beyond,
                "give_up_age_days": self.give_up_age_days,
                "age_shift": {"median_age_days": list(self.shift_ages), "log_odds_shift": list(self.shifts)},
                "method": "stale: open longer than give_up_age_days (the age from which fewer than "
                          f"{LOST_BELOW:.0%} of the deals still open went on to win, at most the longest win), or "
                          "longer in its stage than any deal that went on to win stayed there; "
                          "p_win_if_open_at_age: Aalen-Johansen, open deals censored; "
                          "age_shift: the model's P(won) of the deals open at as_of shifted (log-odds, by age band) "
                          "so that their mean is the curve's mean over the same deals"}


def fit_age_shift(rule: StaleRule, deals: pd.DataFrame, age_days, p: np.ndarray) -> StaleRule:
    """`rule` with the log-odds shift by deal age that makes the model's mean P(won) `p` of
    the deals open at `rule.as_of` (their ages `age_days`) equal, in each band of
    `MIN_BAND` or more deals of similar age, the mean over the same deals of the learned curve
    P(eventually won | open at their age) (`win_curve`; 0 past the last age at risk).

    Why: a training row's label is known at its fold's cutoff only if its deal closed by
    then (or was given up, `lost_at_cutoff`); young deals that win close fast, the ones that
    will be lost stay open (and are left out), so the model learns too high a P(won) for young
    open deals, most when losses are marked late or never (zombies). The curve counts the deals
    still open as censored instead of leaving them out; the shift keeps the model's ranking
    within an age band and takes its level from the curve. The rule unchanged with fewer than
    2 x `MIN_BAND` open deals or no rule."""
    age = np.asarray(age_days, dtype="float64")
    p = np.asarray(p, dtype="float64")
    ok = np.isfinite(age) & np.isfinite(p)
    if rule.max_won_age_days is None or rule.as_of is None or ok.sum() < 2 * MIN_BAND:
        return rule
    age, p = age[ok], p[ok]
    curve = np.nan_to_num(_curve_by_day(deals, rule.as_of), nan=0.0)
    day = np.clip(np.floor(age).astype("int64"), 0, None)
    target = np.where(day < len(curve), curve[np.minimum(day, len(curve) - 1)], 0.0)
    order = np.argsort(age, kind="stable")
    n_bands = max(1, min(MAX_BANDS, len(age) // MIN_BAND))
    band = np.empty(len(age), dtype="int64")
    band[order] = np.arange(len(age)) * n_bands // len(age)  # consecutive ages, equal counts
    logit = _logit(p)
    goal = np.bincount(band, target, n_bands) / np.bincount(band, minlength=n_bands)
    lo, hi = np.full(n_bands, -SHIFT_LIMIT), np.full(n_bands, SHIFT_LIMIT)
    for _ in range(50):  # bisection on every band at once: the band's mean P(won) rises with the shift
        mid = (lo + hi) / 2
        mean = np.bincount(band, _expit(logit + mid[band]), n_bands) / np.bincount(band, minlength=n_bands)
        lo, hi = np.where(mean < goal, mid, lo), np.where(mean < goal, hi, mid)
    mids = pd.Series(age).groupby(band).median().to_numpy()
    return replace(rule, shift_ages=tuple(float(a) for a in mids), shifts=tuple(float(s) for s in (lo + hi) / 2))


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(q / (1 - q))


def _expit(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def by_name(numbers: dict[str, float], names: np.ndarray) -> np.ndarray:
    """`numbers[name]` for each of `names` (object array), NaN for a name not in `numbers` or
    missing. No pandas Series per call: a request of one deal pays microseconds, not a millisecond."""
    keys = list(numbers)
    if len(names) > SMALL:
        codes = pd.Index(keys, dtype=object).get_indexer(names)
    else:  # a request's names: the dict alone (a pandas Index costs ~0.2 ms to build)
        codes = np.fromiter(map({k: i for i, k in enumerate(keys)}.get, names, repeat(-1)), "int64", len(names))
    return np.append(np.asarray(list(numbers.values()), dtype="float64"), np.nan)[codes]


def _days(values: np.ndarray) -> np.ndarray:
    return pd.Series(values).round().astype("int64").astype(str).to_numpy(dtype=object) + " days"


def won_ages(deals: pd.DataFrame, at: pd.Timestamp) -> np.ndarray:
    """Creation-to-win days of the deals won by `at`."""
    closed = deals["closed_at"].to_numpy(dtype=TIMESTAMP_DTYPE)
    won = (deals["outcome"] == "won").fillna(False).to_numpy(dtype=bool) & ~np.isnat(closed) \
        & (closed <= np.datetime64(pd.Timestamp(at), "us"))
    return (closed[won] - deals["created_at"].to_numpy(dtype=TIMESTAMP_DTYPE)[won]) / DAY


def fit_stale_rule(data: CanonicalData, as_of=None) -> StaleRule:
    """The rule as known at `as_of` (default: the data end): only deals won by then count."""
    at = pd.Timestamp(data.data_end if as_of is None else as_of)
    deals = data.deals
    ages = won_ages(deals, at)
    if len(ages) < MIN_WON:
        return StaleRule(at, int(len(ages)), None)
    longest = float(ages.max())
    beyond = win_curve(deals, at, ages=(int(longest),))[int(longest)]
    return StaleRule(at, int(len(ages)), longest, _won_stage_days(data, at), win_curve(deals, at), beyond,
                     give_up_age_days=give_up_age(deals, at))


def lost_at_cutoff(deals: pd.DataFrame, deal_ids: pd.Series, cutoff: pd.Timestamp) -> np.ndarray:
    """Per row (a deal id): the deal is still open at `cutoff` (not closed by then) and
    already at least `give_up_age` old then, so it counts as lost for labels known at
    `cutoff`. All False when fewer than `MIN_WON` deals were won by then."""
    limit = give_up_age(deals, cutoff)
    if limit is None:
        return np.zeros(len(deal_ids), dtype=bool)
    d = deals.set_index("deal_id")
    created = d["created_at"].reindex(deal_ids).to_numpy(dtype=TIMESTAMP_DTYPE)
    closed = d["closed_at"].reindex(deal_ids).to_numpy(dtype=TIMESTAMP_DTYPE)
    cut = np.datetime64(pd.Timestamp(cutoff), "us")
    still_open = np.isnat(closed) | (closed > cut)
    return still_open & ((cut - created) / DAY >= limit)


def _won_stage_days(data: CanonicalData, at: pd.Timestamp) -> dict[str, float]:
    """Per stage: the longest stay of a deal won by `at` in that stage (MIN_WON stays at least)."""
    if data.stage_events is None or not len(data.stage_events):
        return {}
    deals = data.deals.reset_index(drop=True)
    spells = stage_spells(running_state(data), deals["closed_at"].to_numpy(dtype=TIMESTAMP_DTYPE))
    closed = deals["closed_at"].to_numpy(dtype=TIMESTAMP_DTYPE)
    won = ((deals["outcome"] == "won").fillna(False).to_numpy(dtype=bool) & ~np.isnat(closed)
           & (closed <= np.datetime64(at, "us")))[spells["deal"]]
    frame = pd.DataFrame({"stage": spells["stage_index"][won], "dwell": spells["dwell_days"][won]}).dropna()
    stats = frame.groupby("stage")["dwell"].agg(["max", "size"])
    stages = list(data.meta.stages)
    return {stages[int(i)]: float(r["max"]) for i, r in stats.iterrows() if r["size"] >= MIN_WON and 0 <= i < len(stages)}


def win_curve(deals: pd.DataFrame, at: pd.Timestamp, ages=CURVE_AGES) -> dict[int, float | None]:
    """P(eventually won | still open at age a) for each age a (days), Aalen-Johansen with
    deals open at `at` censored at their age then; None past the last age at risk."""
    curve = _curve_by_day(deals, at)
    return {int(a): (float(curve[int(a)]) if int(a) < len(curve) and np.isfinite(curve[int(a)]) else None)
            for a in ages}


def give_up_age(deals: pd.DataFrame, at: pd.Timestamp) -> float | None:
    """The age (days) from which a deal still open at `at` counts as lost in the labels known
    at `at`: the first age where fewer than `LOST_BELOW` of the deals still open at that age
    went on to win (`win_curve`), and at most the longest won age; None with too few wins."""
    ages = won_ages(deals, at)
    if len(ages) < MIN_WON:
        return None
    curve = _curve_by_day(deals, at)
    low = np.flatnonzero(np.nan_to_num(curve, nan=0.0) < LOST_BELOW)
    return float(min(ages.max(), low[0])) if len(low) else float(ages.max())


def _curve_by_day(deals: pd.DataFrame, at: pd.Timestamp) -> np.ndarray:
    """`win_curve` at every whole day of age from 0 (NaN where nobody is at risk)."""
    created = deals["created_at"].to_numpy(dtype=TIMESTAMP_DTYPE)
    closed = deals["closed_at"].to_numpy(dtype=TIMESTAMP_DTYPE)
    cut = np.datetime64(pd.Timestamp(at), "us")
    seen = ~np.isnat(created) & (created <= cut)
    done = seen & ~np.isnat(closed) & (closed <= cut)
    end = np.where(done, closed, cut)
    t = np.floor((end[seen] - created[seen]) / DAY).astype("int64")
    won = (done & (deals["outcome"] == "won").fillna(False).to_numpy(dtype=bool))[seen]
    lost = done[seen] & ~won
    if not len(t):
        return np.full(0, np.nan)
    n_days = int(t.max()) + 1
    n_end = np.bincount(t, minlength=n_days)
    at_risk = len(t) - np.concatenate([[0], np.cumsum(n_end)[:-1]])  # still open at the start of day d
    w, lo = np.bincount(t[won], minlength=n_days), np.bincount(t[lost], minlength=n_days)
    risk = np.maximum(at_risk, 1)
    surv_after = np.cumprod(1 - np.where(at_risk > 0, (w + lo) / risk, 0.0))  # open after day d
    surv_before = np.concatenate([[1.0], surv_after[:-1]])
    cif = np.cumsum(surv_before * np.where(at_risk > 0, w / risk, 0.0))
    before = np.concatenate([[0.0], cif[:-1]])
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.maximum(cif[-1] - before, 0.0) / surv_before
    return np.where((at_risk > 0) & (surv_before > 0), out, np.nan)

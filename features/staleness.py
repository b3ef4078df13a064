"""Stale deals, learned from the data: the one home of the stale rule.

A deal is **stale** at T when it has been open longer than any deal that was ever won
(as known at T: deals won by T), or has stayed in its current stage longer than any deal
that went on to win ever stayed in that stage. The score (`training.predictor`), the
pipeline metrics (`features.analytics`) and the forecast (`training.forecast`) all flag
deals with `StaleRule.flag`; training labels a snapshot row whose deal is still open at
its fold's label cutoff and already stale then as lost (`stale_at_cutoff`): the empirical
chance that a deal older than every win ever wins is zero, and leaving these rows out
(right-censored) would teach the model that old deals are the ones that win (losses are
often marked early, wins late, so among *closed* old deals every one was won).

Method (`win_curve`): the chance that a deal open at age a is eventually won,
P(win | open at a) = (CIF_won(inf) - CIF_won(a)) / S(a), with the Aalen-Johansen
cumulative incidence of a win (competing risks: won, lost; deals still open at T are
right-censored at their age at T) and S the Kaplan-Meier chance of still being open,
in whole days, vectorised with numpy. It is reported beside the rule (`to_dict`); it
falls to 0 beyond the longest won age, which is where the rule starts.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.schema import TIMESTAMP_DTYPE, CanonicalData
from features.snapshots import running_state, stage_spells

MIN_WON = 10  # fewer won deals than this: no rule (a maximum of a handful of wins says nothing)
CURVE_AGES = (0, 30, 60, 90, 180, 365, 730)
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

    def flag(self, age_days, days_in_stage=None, stage=None) -> tuple[np.ndarray, np.ndarray]:
        """(stale: bool per deal, reason: words per deal, None where not stale)."""
        age = np.asarray(age_days, dtype="float64")
        stale = np.zeros(len(age), dtype=bool)
        reason = np.full(len(age), None, dtype=object)
        if self.max_won_age_days is None:
            return stale, reason
        old = age > self.max_won_age_days
        reason[old] = _days(age[old]) + (f"; no won deal took longer than {self.max_won_age_days:.0f} days")
        reason[old] = "open " + reason[old]
        stale |= old
        if days_in_stage is None or stage is None or not self.max_won_stage_days:
            return stale, reason
        dwell = np.asarray(days_in_stage, dtype="float64")
        names = pd.Series(np.asarray(stage, dtype=object)).astype("string")
        limit = names.map(self.max_won_stage_days).astype("float64").to_numpy()
        long = ~old & (dwell > limit)  # NaN limit (stage never on a win's way): no flag
        if long.any():
            lim = pd.Series(limit[long]).round().astype("int64").astype(str).to_numpy()
            reason[long] = (_days(dwell[long]) + " in " + names[long].to_numpy(dtype=object)
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
                "method": "stale: open longer than any won deal (or longer in its stage than any deal that went "
                          "on to win stayed there); p_win_if_open_at_age: Aalen-Johansen, open deals censored"}


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
    return StaleRule(at, int(len(ages)), float(ages.max()), _won_stage_days(data, at), win_curve(deals, at))


def stale_at_cutoff(deals: pd.DataFrame, deal_ids: pd.Series, cutoff: pd.Timestamp) -> np.ndarray:
    """Per row (a deal id): the deal is still open at `cutoff` (not closed by then) and
    already older than every deal won by then, so it counts as lost for labels known at
    `cutoff`. All False when fewer than `MIN_WON` deals were won by then."""
    ages = won_ages(deals, cutoff)
    if len(ages) < MIN_WON:
        return np.zeros(len(deal_ids), dtype=bool)
    d = deals.set_index("deal_id")
    created = d["created_at"].reindex(deal_ids).to_numpy(dtype=TIMESTAMP_DTYPE)
    closed = d["closed_at"].reindex(deal_ids).to_numpy(dtype=TIMESTAMP_DTYPE)
    cut = np.datetime64(pd.Timestamp(cutoff), "us")
    still_open = np.isnat(closed) | (closed > cut)
    return still_open & ((cut - created) / DAY > ages.max())


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
    created = deals["created_at"].to_numpy(dtype=TIMESTAMP_DTYPE)
    closed = deals["closed_at"].to_numpy(dtype=TIMESTAMP_DTYPE)
    cut = np.datetime64(pd.Timestamp(at), "us")
    seen = ~np.isnat(created) & (created <= cut)
    done = seen & ~np.isnat(closed) & (closed <= cut)
    end = np.where(done, closed, cut)
    t = np.floor((end[seen] - created[seen]) / DAY).astype("int64")
    won = (done & (deals["outcome"] == "won").fillna(False).to_numpy(dtype=bool))[seen]
    lost = (done[seen] & ~won)
    if not len(t):
        return {int(a): None for a in ages}
    days = np.arange(t.max() + 1)
    n_end = np.bincount(t, minlength=len(days))
    at_risk = len(t) - np.concatenate([[0], np.cumsum(n_end)[:-1]])  # still open at the start of day d
    w = np.bincount(t[won], minlength=len(days))
    lo = np.bincount(t[lost], minlength=len(days))
    hazard = np.where(at_risk > 0, (w + lo) / np.maximum(at_risk, 1), 0.0)
    surv_after = np.cumprod(1 - hazard)  # S(d+): open after day d
    surv_before = np.concatenate([[1.0], surv_after[:-1]])
    cif = np.cumsum(surv_before * np.where(at_risk > 0, w / np.maximum(at_risk, 1), 0.0))
    out = {}
    for a in ages:
        a = int(a)
        if a >= len(days) or at_risk[a] == 0 or surv_before[a] <= 0:
            out[a] = None
            continue
        before = cif[a - 1] if a > 0 else 0.0
        out[a] = float(max(cif[-1] - before, 0.0) / surv_before[a])
    return out

"""Funnel, time in stage, sales cycle, deal size and the bottleneck, from a PipelineState."""
from __future__ import annotations

import numpy as np
import pandas as pd

from features.analytics.state import PipelineState, days, lookup
from features.dates import DAY
from features.winrates import closed_win_rate

QUANTILES = {"median_days": 0.5, "p75_days": 0.75, "p90_days": 0.9}
RECENT_DAYS, PRIOR_DAYS = 90, 365  # bottleneck: last 90 days against the 365 days before
MIN_SPELLS = 3  # fewer completed spells in a window is noise, not a trend


def funnel(state: PipelineState) -> dict:
    """Per stage: advanced / (advanced + lost), advanced = reached a later stage or won
    with this as the furthest stage, lost = lost with this as the furthest stage; deals
    still open there are left out. Deals closed at a stage nobody saw (a current-state
    export: `closed_at_unknown_stage`) count in no stage, and while any of them was lost no
    stage's conversion is known (None).

    Also deals reaching each stage (by furthest stage reached), the closed win rate
    (`features.winrates.closed_win_rate`) and losses by stage.
    """
    d, stages = state.deals, state.stages
    furthest = lookup(state.spells.groupby("deal_id")["stage_idx"].max(), d["deal_id"]).to_numpy(dtype="float64")
    won, lost, open_ = (d["outcome"] == "won").to_numpy(), (d["outcome"] == "lost").to_numpy(), d["outcome"].isna().to_numpy()
    unknown = d["deal_id"].isin(state.spells.loc[state.spells["exit"] == "unknown", "deal_id"]).to_numpy()
    unknown_losses = int((unknown & lost).sum())  # could be any stage's: no conversion is known then
    rows = []
    for i, stage in enumerate(stages):
        at = (furthest == i) & ~unknown
        advanced = int((furthest > i).sum() + (at & won).sum())
        lost_here = int((at & lost).sum())
        rows.append({"stage": stage, "reached": int((furthest >= i).sum()), "open_here": int((at & open_).sum()),
                     "advanced": advanced, "lost_here": lost_here,
                     "conversion": ratio(advanced, advanced + lost_here) if not unknown_losses else None})
    return {"stages": rows, "won": int(won.sum()), "lost": int(lost.sum()), "open": int(open_.sum()),
            "win_rate": closed_win_rate(won, lost), "losses_by_stage": losses_by_stage(state),
            "closed_at_unknown_stage": {"won": int((unknown & won).sum()), "lost": unknown_losses}}


def losses_by_stage(state: PipelineState) -> list[dict]:
    """Lost deals counted by the stage they were in when lost (regressions included; a
    deal lost at a stage nobody saw counts in none)."""
    lost = state.spells.loc[state.spells["exit"] == "lost", "stage"].value_counts()
    total = int(lost.sum())
    return [{"stage": s, "lost": int(lost.get(s, 0)), "share": ratio(lost.get(s, 0), total)} for s in state.stages]


def completed_spells(state: PipelineState) -> pd.DataFrame:
    """Spells that ended (by a stage change or the close) by as_of, with a known dwell_days."""
    return state.spells.loc[state.spells["end"].notna() & state.spells["dwell_days"].notna()]


def time_in_stage(state: PipelineState) -> list[dict]:
    """Median/P75/P90 days over completed spells per stage, plus how many are still open."""
    done = completed_spells(state)
    q = done.groupby("stage")["dwell_days"].quantile(list(QUANTILES.values())).unstack()
    n_done = done["stage"].value_counts()
    n_open = state.spells.loc[state.spells["end"].isna(), "stage"].value_counts()
    rows = []
    for stage in state.stages:
        row = {"stage": stage, "spells": int(n_done.get(stage, 0)), "open_spells": int(n_open.get(stage, 0))}
        for name, p in QUANTILES.items():
            row[name] = float(q.loc[stage, p]) if stage in q.index else None
        rows.append(row)
    return rows


def won_deals(state: PipelineState, since: pd.Timestamp | None = None, until: pd.Timestamp | None = None
              ) -> pd.DataFrame:
    """Deals won within (since, until] (whole history by default), with cycle_days."""
    d = state.deals
    mask = d["outcome"] == "won"
    if since is not None:
        mask &= d["closed_at"] > since
    if until is not None:
        mask &= d["closed_at"] <= until
    won = d.loc[mask]
    return won.assign(cycle_days=days(won["closed_at"] - won["created_at"]))


def sales_cycle(state: PipelineState) -> dict:
    """Days from creation to close of won deals."""
    c = won_deals(state)["cycle_days"]
    return {"won_deals": int(len(c)), "mean_days": stat(c.mean()), "median_days": stat(c.median()),
            "p75_days": stat(c.quantile(0.75)), "p90_days": stat(c.quantile(0.9))}


def deal_size(state: PipelineState) -> dict:
    """Average and median amount of won deals (deals without an amount left out, and counted)."""
    a = won_deals(state)["amount"]
    return {"won_deals": int(len(a)), "without_amount": int(a.isna().sum()),
            "average_won_amount": stat(a.mean()), "median_won_amount": stat(a.median())}


def stage_history(state: PipelineState, since: pd.Timestamp, until: pd.Timestamp) -> pd.DataFrame:
    """Per stage: the share of its spells (stays) ending in the window that ended by
    moving forward or winning.

    Per stage, over spells that ended in (since, until]: count, that conversion, median dwell.
    """
    done = completed_spells(state)
    done = done.loc[(done["end"] > since) & (done["end"] <= until)]
    forward = done["exit"].isin(["advanced", "won"])
    g = done.assign(forward=forward).groupby("stage")
    out = pd.DataFrame({"spells": g.size(), "conversion": g["forward"].mean(), "median_days": g["dwell_days"].median()})
    return out.reindex(state.stages)


def bottleneck(state: PipelineState) -> dict:
    """The stage whose conversion fell most, or dwell grew most, against its own history.

    Recent = spells that ended in the last 90 days; prior = the 365 days before. The
    score of a stage is the larger of the relative conversion drop and the relative
    dwell increase; stages with fewer than MIN_SPELLS spells in either window are skipped.
    """
    as_of = state.as_of
    recent = stage_history(state, as_of - RECENT_DAYS * DAY, as_of)
    prior = stage_history(state, as_of - (RECENT_DAYS + PRIOR_DAYS) * DAY, as_of - RECENT_DAYS * DAY)
    conv_drop = (prior["conversion"] - recent["conversion"]) / prior["conversion"].where(prior["conversion"] > 0)
    dwell_rise = (recent["median_days"] - prior["median_days"]) / prior["median_days"].where(prior["median_days"] > 0)
    enough = (recent["spells"].fillna(0) >= MIN_SPELLS) & (prior["spells"].fillna(0) >= MIN_SPELLS)
    rows = []
    for stage in state.stages:
        rows.append({"stage": stage, "recent_spells": int(np.nan_to_num(recent.loc[stage, "spells"])),
                     "prior_spells": int(np.nan_to_num(prior.loc[stage, "spells"])),
                     "recent_conversion": stat(recent.loc[stage, "conversion"]),
                     "prior_conversion": stat(prior.loc[stage, "conversion"]),
                     "recent_median_days": stat(recent.loc[stage, "median_days"]),
                     "prior_median_days": stat(prior.loc[stage, "median_days"]),
                     "conversion_drop": stat(conv_drop[stage]) if enough[stage] else None,
                     "dwell_increase": stat(dwell_rise[stage]) if enough[stage] else None})
    scored = [(max(v for v in (r["conversion_drop"], r["dwell_increase"]) if v is not None), r)
              for r in rows if r["conversion_drop"] is not None or r["dwell_increase"] is not None]
    base = {"recent_window_days": RECENT_DAYS, "prior_window_days": PRIOR_DAYS, "stages": rows}
    if not scored:
        return {**base, "stage": None, "metric": None, "change": None, "worse_than_history": False,
                "reason": f"no stage has {MIN_SPELLS}+ completed spells in both windows"}
    score, worst = max(scored, key=lambda x: x[0])
    metric = "conversion" if worst["conversion_drop"] == score else "dwell"
    return {**base, "stage": worst["stage"], "metric": metric, "change": score, "worse_than_history": score > 0,
            "recent": worst[f"recent_{'conversion' if metric == 'conversion' else 'median_days'}"],
            "prior": worst[f"prior_{'conversion' if metric == 'conversion' else 'median_days'}"]}


def ratio(num, den) -> float | None:
    return float(num) / float(den) if den else None


def stat(x) -> float | None:
    return None if x is None or pd.isna(x) else float(x)

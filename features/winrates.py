"""Every "win rate" the project computes, one named function each.

The first paragraph of each docstring is the definition, word for word what the
reports print beside the number (`definition(fn)`): the pipeline metrics JSON carries them in
its `definitions` entry and the HTML report as captions. They differ on purpose (which
deals count, over which window, with what smoothing), so a screen must say which one
it shows.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd


def closed_win_rate(won, lost) -> float | None:
    """won / (won + lost) over the deals closed in the window; open deals are left out.

    `won`, `lost`: counts (or boolean masks, summed). None when nothing closed.
    """
    won, lost = float(np.sum(won)), float(np.sum(lost))
    return won / (won + lost) if won + lost else None


def laplace_win_rate(won: np.ndarray, lost: np.ndarray) -> np.ndarray:
    """(won + 1) / (won + lost + 2) over the deals closed before T: the closed win rate
    with one won and one lost pseudo-deal, 0.5 before any close.

    The feature `global_win_rate`, and the prior every group's rate is shrunk toward.
    """
    return (won + 1.0) / (won + lost + 2.0)


def smoothed_group_rate(won: np.ndarray, lost: np.ndarray, prior: np.ndarray, smoothing: float) -> np.ndarray:
    """(won + k * prior) / (won + lost + k): a group's closed win rate shrunk toward a
    prior rate with k pseudo-deals.

    k = `smoothing`. The features `<group>_win_rate` (closed deals of the owner, account,
    source, ... before T, prior `laplace_win_rate`) and the stage-rate baseline (training
    rows in the stage, prior the rows' overall share won).
    """
    return (won + smoothing * prior) / (won + lost + smoothing)


def stage_reach_win_rate(reached: pd.DataFrame, outcomes: pd.DataFrame) -> pd.Series:
    """Per stage s: among the closed deals that reached s (every deal reaches the first
    stage), the share won.

    `reached`: deal_id, stage (one row per stage a deal entered; duplicates are dropped);
    `outcomes`: deal_id, outcome of the closed deals. Returns the rate indexed by stage
    (stages no closed deal reached are absent). The weighted-pipeline forecast baseline.
    """
    both = reached[["deal_id", "stage"]].drop_duplicates().merge(outcomes[["deal_id", "outcome"]], on="deal_id")
    return both.groupby("stage")["outcome"].apply(lambda o: (o == "won").mean())


def won_within_rate(cycle_days: pd.Series, days: int) -> float:
    """Share of the cohort's deals (open, lost and won alike) won within N days of creation.

    N = `days`. `cycle_days`: days from creation to a won close per deal, NaN for deals not won.
    """
    return float((cycle_days <= days).mean())


def definition(rate: Callable) -> str:
    """The definition a report prints for a win-rate function: its docstring's first
    paragraph, on one line."""
    return " ".join(rate.__doc__.strip().split("\n\n")[0].split())

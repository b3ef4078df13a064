"""History tables cut to the as-of dates a job asks for: the same answers in a fraction of the memory.

A history table (`features.history.GroupTable`) keeps a row per (group, time a fact became
known): at 10M deals ~8.7M rows in each of the grouping columns' tables, 3.75 GiB in all,
which every worker building features needs. A job that builds features at a few as-of
dates T only ever reads, per group, the last row dated before T (strict lookups) or at/before
T (the open load): `cut_table` keeps those rows and drops the rest, so every lookup at those
dates returns the same row, bit for bit, and the tables of the small grouping columns
(owner, source, ...) shrink to a few rows per level and date. The cut `History` records its
dates (`History.as_of`) and `FeatureBuilder.columns` refuses any other date.

`cut_history_from` is the open-ended cut a model serves with: every date from its
out-of-sample start on (`train --cluster`, where the full tables are GiBs; `training.run`): per group the last row before
that date and every row from it on (`History.answers_from`); earlier dates are refused.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from features.asof import run_ends
from features.dates import as_of_timestamps
from features.errors import LeadscoreError
from features.history import GroupTable, History
from features.schema import TIMESTAMP_DTYPE


class HistoryCutError(LeadscoreError, ValueError):
    """An as-of date that history tables cut to other dates do not answer."""


def as_of_dates(as_of) -> np.ndarray:
    """The sorted distinct as-of dates (`features.dates.as_of_timestamps`), as a numpy array."""
    return as_of_timestamps(as_of).to_numpy()


def answering_rows(code: np.ndarray, at: np.ndarray, dates: np.ndarray) -> np.ndarray:
    """Which rows of a table sorted by (code, at), one row per (code, at), a lookup at one of
    `dates` (sorted) can return: row i answers T strictly when at_i < T <= the next row's
    time in its code, and at-or-before when at_i <= T < it (the last row of a code: no end)."""
    if not len(code):
        return np.zeros(0, dtype=bool)
    t, nxt = _times(code, at)
    d = dates.astype(TIMESTAMP_DTYPE).view("int64")
    strict = np.searchsorted(d, nxt, side="right") > np.searchsorted(d, t, side="right")  # some T in (at, next]
    at_or_before = np.searchsorted(d, nxt, side="left") > np.searchsorted(d, t, side="left")  # some T in [at, next)
    return strict | at_or_before


def _times(code: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's time and the next row's time in its code (int64 ns; the last row of a
    code: the largest int64)."""
    t = at.astype(TIMESTAMP_DTYPE).view("int64")
    nxt = np.empty_like(t)
    nxt[:-1] = t[1:]
    nxt[run_ends(code)] = np.iinfo("int64").max
    return t, nxt


def cut_table(table: GroupTable, dates: np.ndarray) -> GroupTable:
    """The rows of `table` a lookup at `dates` (`as_of_dates`) can return (`answering_rows`)."""
    t = table.table
    keep = answering_rows(t["code"].to_numpy(), t["at"].to_numpy(dtype=TIMESTAMP_DTYPE), dates)
    return GroupTable(levels=table.levels, table=t.loc[keep].reset_index(drop=True))


def cut_history(history: History, as_of) -> History:
    """Every table of `history` cut to the as-of dates `as_of`: lookups at those dates only
    (`history` may be cut from a date already, `cut_history_from`, if `as_of` are not earlier)."""
    dates = as_of_dates(as_of)
    if history.as_of is not None and not np.isin(dates, history.as_of).all():
        raise ValueError("these history tables were already cut to other as-of dates: cut the full history")
    check_dates(history, dates)  # tables cut from a date: later dates only (their rows are a suffix per group)
    return replace(history, outcomes=cut_table(history.outcomes, dates), dwell=cut_table(history.dwell, dates),
                   groups={col: cut_table(t, dates) for col, t in history.groups.items()},
                   open_load=None if history.open_load is None else cut_table(history.open_load, dates),
                   as_of=dates)


def cut_table_from(table: GroupTable, start: np.datetime64) -> GroupTable:
    """The rows of `table` a lookup at any date from `start` on can return: those whose next
    row in their code is dated at or after `start` (the last row before it, and every row after)."""
    t = table.table
    if not len(t):
        return table
    _t, nxt = _times(t["code"].to_numpy(), t["at"].to_numpy(dtype=TIMESTAMP_DTYPE))
    keep = nxt >= np.datetime64(start).astype(TIMESTAMP_DTYPE).astype("int64")
    return GroupTable(levels=table.levels, table=t.loc[keep].reset_index(drop=True))


def cut_history_from(history: History, start) -> History:
    """Every table of `history` cut to answer the as-of dates from `start` on, the same rows
    as the full tables at those dates; earlier dates are refused (`check_dates`). `history`
    may be cut from an earlier date already: its rows are then a suffix of every group's
    (`cut_table_from`), so cutting it again keeps exactly the rows the full tables would."""
    start = as_of_dates([start])[0]
    if history.as_of is not None or (history.answers_from is not None and start < history.answers_from):
        raise ValueError("these history tables were already cut (to as-of dates, or from a later date): "
                         "cut the full history")
    return replace(history, outcomes=cut_table_from(history.outcomes, start),
                   dwell=cut_table_from(history.dwell, start),
                   groups={col: cut_table_from(t, start) for col, t in history.groups.items()},
                   open_load=None if history.open_load is None else cut_table_from(history.open_load, start),
                   answers_from=start)


def check_dates(history: History, at: np.ndarray) -> None:
    """A one-line `HistoryCutError` when cut tables cannot answer the as-of dates `at`."""
    if history.as_of is not None and not np.isin(at, history.as_of).all():
        raise HistoryCutError(f"this builder's history was cut to the as-of dates {_dates(history.as_of)} "
                              f"(FeatureBuilder.for_dates): use the full builder for other dates")
    if history.answers_from is not None and len(at) and np.min(at) < history.answers_from:
        raise HistoryCutError(
            f"as-of {str(np.min(at))[:10]} is before {str(history.answers_from)[:10]}: this model's history "
            f"tables were cut to answer as-of dates from its out-of-sample start on (`train --cluster`; see its "
            f"info['history_from']); train without --cluster for a model that scores earlier dates")


def _dates(dates: np.ndarray) -> str:
    return ", ".join(str(d)[:10] for d in dates[:5]) + (f" and {len(dates) - 5} more" if len(dates) > 5 else "")

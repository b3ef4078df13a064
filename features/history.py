"""Time-indexed history learned from closed deals, looked up as of any date.

`fit_history` builds cumulative tables ordered by the time each fact became known
(closed_at for outcomes, the spell end for stage dwell, created/closed for open load);
`lookup` reads them as of T (an as-of join, see `features.asof.asof_positions`; a
table's `TableIndex` keeps its half of that search, so a one-deal lookup costs two binary
searches), so an aggregate at T only ever sees deals closed strictly before T. The tables
are small and picklable: the served model carries them and applies the same lookup to a
one-deal payload (with the search indexes built once, `features.lookups.FeatureLookups`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.arrays import deal_positions
from features.asof import asof_index, asof_search, group_cumsum, group_starts, run_ends
from features.schema import TIMESTAMP_DTYPE
from features.snapshots import stage_spells


@dataclass
class GroupTable:
    """Cumulative columns per group value (position in `levels` = `code`), sorted by (code, at)."""

    levels: pd.Index
    table: pd.DataFrame  # code, at, then running sums within each code

    def search_index(self) -> "TableIndex":
        """The table as the arrays `lookup` searches (built per call: the serving object,
        `features.lookups.FeatureLookups`, keeps one)."""
        t = self.table
        code, at = t["code"].to_numpy(dtype="int64"), t["at"].to_numpy(dtype=TIMESTAMP_DTYPE)
        return TableIndex(code=code, index=asof_index(code, at),
                          sums={c: t[c].to_numpy(dtype="float64") for c in t.columns.drop(["code", "at"])})


@dataclass(frozen=True)
class TableIndex:
    """A `GroupTable`'s columns as numpy arrays with its half of the as-of search: a one-deal
    request does a dozen lookups, and pandas column access would cost more than the search."""

    code: np.ndarray
    index: np.ndarray
    sums: dict[str, np.ndarray]


@dataclass
class History:
    outcomes: GroupTable  # all closed deals under one level: the global win rate at T
    groups: dict[str, GroupTable]  # column -> won, lost, won_amount per value
    dwell: GroupTable  # stage index -> dwell_days, spells over completed spells
    open_load: GroupTable | None  # owner -> open deals (created minus closed)
    as_of: np.ndarray | None = None  # the only as-of dates the tables answer (`features.history_cut`); None: any
    answers_from: np.datetime64 | None = None  # cut to answer only as-of dates from this one on (`history_cut`)


def closed_deals(deals: pd.DataFrame, data_end: pd.Timestamp) -> pd.DataFrame:
    """Deals with a known outcome by data_end, sorted by closed_at."""
    closed = deals["closed_at"].notna() & deals["outcome"].isin(["won", "lost"]) \
        & (deals["closed_at"] <= data_end)
    return deals.loc[closed].sort_values("closed_at", kind="stable")


def fit_history(deals: pd.DataFrame, prepared: dict[str, np.ndarray], group_columns: Sequence[str],
                data_end: pd.Timestamp) -> History:
    """All history tables from the training data (deals, prepared stage events): the
    one-partition case of `history_events` then `combine_history`."""
    levels = {col: levels_of(deals[col]) for col in group_columns}
    return combine_history([history_events(deals, prepared, group_columns, data_end)], group_columns, levels)


@dataclass
class HistoryEvents:
    """One partition's facts that the history tables are made of (the map half of
    `fit_history`; `combine_history` is the reduce half). Concatenating the partitions'
    events in partition order and fitting gives the tables of the concatenated tables,
    bit for bit (ties in time keep that order, as in one process)."""

    closed: pd.DataFrame  # deals closed by data_end: closed_at, outcome, amount, grouping columns
    spells: pd.DataFrame  # completed stage spells: stage_index, left_at, dwell_days
    load: pd.DataFrame | None  # owner, at, open_deals (+1 at creation, then -1 at close)
    n_stages: int  # 1 + the highest stage index seen in any event


def history_events(deals: pd.DataFrame, prepared: dict[str, np.ndarray], group_columns: Sequence[str],
                   data_end: pd.Timestamp) -> HistoryEvents:
    """The history facts of some deals (and their prepared stage events)."""
    closed = closed_deals(deals, data_end)[["closed_at", "outcome", "amount", *group_columns]]
    n_stages = int(np.max(prepared["stage_index"])) + 1 if len(prepared["stage_index"]) else 0
    load = _load_events(deals) if "owner" in group_columns else None
    return HistoryEvents(closed=closed, spells=_completed_spells(deals, prepared, data_end), load=load,
                         n_stages=n_stages)


@dataclass
class FitPartial:
    """One partition's share of `FeatureBuilder.fit`: the levels of every column that can
    become a category or a grouping column, and its history events (None: static data)."""

    levels: dict[str, pd.Index]
    events: HistoryEvents | None


def unite_levels(*levels: dict[str, pd.Index]) -> dict[str, pd.Index]:
    """Each column's levels over all partitions (what `levels_of` gives on the whole column),
    from the partitions' or from already united levels (associative: a tree can reduce it)."""
    columns = dict.fromkeys(c for lv in levels for c in lv)
    return {c: _sorted_unique([lv[c] for lv in levels if c in lv]) for c in columns}


def _sorted_unique(indexes: list[pd.Index]) -> pd.Index:
    """The distinct strings of some indexes, sorted (by code point, as `sorted` does), in
    Arrow: ~6x faster than a Python set on 100k account ids."""
    values = pa.chunked_array([pa.array(np.asarray(i, dtype=object), type=pa.large_string()) for i in indexes],
                              type=pa.large_string())
    distinct = pc.unique(values)
    return pd.Index(distinct.take(pc.sort_indices(distinct)).to_pandas(), dtype="string")


@dataclass
class TableRows:
    """One history table's facts before its running sums (group code, time known, values),
    rows in partition order; `levels` is what the codes index (the stages: the most any
    partition saw). Concatenating tables' rows in partition order and summing gives the table
    of the concatenated partitions bit for bit: `_cumulative` keeps ties in that order."""

    levels: pd.Index
    codes: np.ndarray
    at: np.ndarray
    values: dict[str, np.ndarray]


def history_columns(group_columns: Sequence[str], levels: dict[str, pd.Index]) -> list[str]:
    """The grouping columns that get history tables: those with values in the data."""
    return [c for c in group_columns if len(levels.get(c, ()))]


def history_tables(group_columns: Sequence[str]) -> list[str]:
    """The names of the history tables (`table_rows`), each reduced independently."""
    return ["outcomes", *(f"group:{c}" for c in group_columns), "dwell"] \
        + (["open_load"] if "owner" in group_columns else [])


def table_rows(events: HistoryEvents, table: str, levels: dict[str, pd.Index]) -> TableRows:
    """One partition's rows of one history table (`history_tables`), coded by the united levels."""
    if table == "dwell":
        s = events.spells
        return TableRows(pd.RangeIndex(events.n_stages), s["stage_index"].to_numpy(dtype="int64"),
                         s["left_at"].to_numpy(TIMESTAMP_DTYPE),
                         {"dwell_days": s["dwell_days"].to_numpy(), "spells": np.ones(len(s))})
    if table == "open_load":
        load = events.load
        return TableRows(levels["owner"], _codes(levels["owner"], load["owner"]), load["at"].to_numpy(TIMESTAMP_DTYPE),
                         {"open_deals": load["open_deals"].to_numpy()})
    closed = events.closed
    won = (closed["outcome"] == "won").to_numpy(dtype="float64")
    at = closed["closed_at"].to_numpy(dtype=TIMESTAMP_DTYPE)
    if table == "outcomes":
        return TableRows(pd.Index(["all"]), np.zeros(len(closed), "int64"), at, {"won": won, "lost": 1.0 - won})
    col = table.removeprefix("group:")
    return TableRows(levels[col], _codes(levels[col], closed[col]), at,
                     {"won": won, "lost": 1.0 - won,
                      "won_amount": np.where(won == 1.0, closed["amount"].to_numpy(dtype="float64"), 0.0)})


def _codes(levels: pd.Index, values: pd.Series) -> np.ndarray:
    """Each value's position in `levels` (-1: missing), by Arrow's hash lookup."""
    return deal_positions(levels.to_series(), values)


def concat_rows(*parts: TableRows) -> TableRows:
    """Rows of consecutive partitions, in order (associative: a tree can reduce it)."""
    if len(parts) == 1:
        return parts[0]
    return TableRows(max((p.levels for p in parts), key=len), np.concatenate([p.codes for p in parts]),
                     np.concatenate([p.at for p in parts]),
                     {name: np.concatenate([p.values[name] for p in parts]) for name in parts[0].values})


def cumulative_table(rows: TableRows) -> GroupTable:
    """A history table from all partitions' rows: running sums per code in time order."""
    return _cumulative(rows.levels, rows.codes, rows.at, rows.values)


def history_of(tables: dict[str, GroupTable], as_of: np.ndarray | None = None) -> History:
    """The `History` of the tables named by `history_tables` (cut to the dates `as_of`, if given)."""
    groups = {name.removeprefix("group:"): t for name, t in tables.items() if name.startswith("group:")}
    return History(outcomes=tables["outcomes"], groups=groups, dwell=tables["dwell"], open_load=tables.get("open_load"),
                   as_of=as_of)


def combine_history(parts: Sequence[HistoryEvents], group_columns: Sequence[str],
                    levels: dict[str, pd.Index]) -> History:
    """The history tables from every partition's events (in partition order) and the
    levels of each grouping column over all deals (`levels_of`, united), in this process
    (`training.distributed.fit_builder` reduces each table as a tree of tasks instead)."""
    return history_of({name: cumulative_table(concat_rows(*(table_rows(p, name, levels) for p in parts)))
                       for name in history_tables(group_columns)})


def lookup(table: TableIndex, codes: np.ndarray, at: np.ndarray, strict: bool) -> dict[str, np.ndarray]:
    """Running sums of each row's group as of `at`: the group's last table row dated
    before `at` (strict) or at/before it; NaN where there is none. Column -> array."""
    pos = asof_search(table.index, table.code, codes, at, strict=strict)
    found = pos >= 0
    take = np.maximum(pos, 0)
    return {name: np.where(found, values[take], np.nan) if len(values) else np.full(len(codes), np.nan)
            for name, values in table.sums.items()}


GROUP_SUMS = ("won", "lost", "won_amount")


def lookup_groups(stacked: "StackedIndex", codes: list[np.ndarray], at: np.ndarray
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """`lookup(..., strict=True)` of the global outcome table (every row) and of each
    grouping column's table (`codes` per column, in `stacked.columns` order), done as one
    as-of search over the tables stacked under distinct keys: a one-deal request makes one
    search, not one per column. Returns (outcome sums, sums with one row per column:
    (len(columns), n) arrays)."""
    n = len(at)
    keys = [np.zeros(n, "int64"), *(np.where(c >= 0, c + k, -1) for c, k in zip(codes, stacked.offsets[1:]))]
    pos = asof_search(stacked.index, stacked.code, np.concatenate(keys), np.tile(at, len(keys)), strict=True)
    found, take = pos >= 0, np.maximum(pos, 0)
    sums = {name: np.where(found, values[take], np.nan).reshape(len(keys), n) if len(values)
            else np.full((len(keys), n), np.nan) for name, values in stacked.sums.items()}
    return {name: values[0] for name, values in sums.items()}, {name: values[1:] for name, values in sums.items()}


@dataclass(frozen=True)
class StackedIndex:
    """The outcome table and each grouping column's table one under the other, codes shifted
    past the previous tables' levels; still sorted by (code, at), as an as-of search needs."""

    columns: list[str]
    offsets: np.ndarray
    code: np.ndarray
    index: np.ndarray
    sums: dict[str, np.ndarray]

    @classmethod
    def of(cls, history: History, columns: list[str]) -> "StackedIndex":
        tables = [history.outcomes, *(history.groups[c] for c in columns)]
        offsets = np.cumsum([0] + [len(t.levels) for t in tables[:-1]])
        code = np.concatenate([t.table["code"].to_numpy(dtype="int64") + k for t, k in zip(tables, offsets)])
        at = np.concatenate([t.table["at"].to_numpy(dtype=TIMESTAMP_DTYPE) for t in tables])
        sums = {name: np.concatenate([t.table[name].to_numpy(dtype="float64") if name in t.table
                                      else np.full(len(t.table), np.nan) for t in tables]) for name in GROUP_SUMS}
        return cls(columns=list(columns), offsets=offsets, code=code, index=asof_index(code, at), sums=sums)


def levels_of(values: pd.Series) -> pd.Index:
    """The sorted distinct non-missing values of a column, as strings (the union of the
    partitions' levels is the levels of the whole column)."""
    return pd.Index(sorted(values.dropna().astype("string").unique()), dtype="string")


def _cumulative(levels: pd.Index, codes: np.ndarray, at: np.ndarray, values: dict) -> GroupTable:
    """Running sums per code in time order; the last row per (code, time) is all a lookup needs."""
    keep = codes >= 0
    codes, at = codes[keep].astype("int64"), at[keep].astype(TIMESTAMP_DTYPE)
    order = np.lexsort((at, codes))
    codes, at = codes[order], at[order]
    start = group_starts(codes)
    frame = pd.DataFrame({"code": codes, "at": at})
    for name, v in values.items():
        frame[name] = group_cumsum(np.asarray(v, dtype="float64")[keep][order], start)
    last = run_ends(codes) | run_ends(at)
    return GroupTable(levels=levels, table=frame.loc[last].reset_index(drop=True))


def _completed_spells(deals: pd.DataFrame, prepared: dict[str, np.ndarray], data_end: pd.Timestamp
                      ) -> pd.DataFrame:
    """Completed stage spells (`features.snapshots.stage_spells`: ended by the next stage
    change, or by the deal's close by data_end) whose entry was observed (a current-state
    export's stay before its first sighting has no known length), what the dwell table
    sums per stage in order of the spell's end."""
    closed_at = deals["closed_at"].to_numpy(dtype=TIMESTAMP_DTYPE)
    closed_at = np.where(closed_at <= np.datetime64(data_end), closed_at, np.datetime64("NaT"))
    spells = stage_spells(prepared, closed_at)
    done = ~np.isnat(spells["left_at"]) & spells["entry_known"]
    return pd.DataFrame({"stage_index": spells["stage_index"][done], "left_at": spells["left_at"][done],
                         "dwell_days": spells["dwell_days"][done]})


def _load_events(deals: pd.DataFrame) -> pd.DataFrame:
    """Per deal +1 for its owner at creation, then -1 at its close (when closed)."""
    owner = deals["owner"].astype("string")
    created = deals["created_at"].to_numpy(dtype=TIMESTAMP_DTYPE)
    closed = deals["closed_at"].to_numpy(dtype=TIMESTAMP_DTYPE)
    has_close = ~np.isnat(closed)
    return pd.DataFrame({"owner": pd.concat([owner, owner[has_close]], ignore_index=True),
                         "at": np.r_[created, closed[has_close]],
                         "open_deals": np.r_[np.ones(len(owner)), -np.ones(has_close.sum())]})

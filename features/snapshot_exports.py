"""Exports that hold the current state only, and how successive ones build a history.

A snapshot-only export (a deals file with a current `stage` column and no stage history)
tells where each open deal stands *at the export date*, not since when. Ingest records
that as a stage event dated at the export (`exported_at`): a fact known from that date
on, so a snapshot at any earlier as-of date does not see it (the deal sits in the first
stage from creation until then, as for any deal without history). An expected close
date on deals (mapped, or the "Close Date" of an open deal) is recorded the same way.

`append_export` adds a later export of the same CRM to a dataset: new deals are added,
open deals whose stage, amount or expected close date changed get a stage event dated at
the new export, deals that closed get their outcome; nothing already stored is rewritten.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from features.errors import MappingError
from features.parsing import parse_timestamps
from features.schema import TIMESTAMP_DTYPE, CanonicalData
from features.snapshots import deals_at

STATE_FIELDS = ("stage", "amount", "expected_close_date")


def current_state(deals: pd.DataFrame, history: pd.DataFrame | None, stages: list[str],
                  notes: list[str]) -> pd.DataFrame | None:
    """Per open deal, its state as the export shows it: deal_id, stage, amount,
    expected_close_date. None when the export says nothing beyond the deals' own columns
    (it has a stage history and no expected close dates on deals)."""
    snapshot_only = is_snapshot_only(deals, history)
    if not snapshot_only and "expected_close_date" not in deals:
        return None
    open_deals = deals.loc[deals["outcome"].isna()]
    stage = open_deals["stage"].astype("string") if snapshot_only \
        else _last_stage(open_deals["deal_id"], history, stages)
    return pd.DataFrame({"deal_id": open_deals["deal_id"].to_numpy(),
                         "stage": stage.fillna(stages[0]).to_numpy(),
                         "amount": open_deals["amount"].to_numpy(dtype="float64", na_value=np.nan),
                         "expected_close_date": _expected_dates(open_deals, notes).to_numpy()})


def is_snapshot_only(deals: pd.DataFrame, history: pd.DataFrame | None) -> bool:
    """A current `stage` on deals and no stage history: stages are known only at the export."""
    return "stage" in deals and history is None


def snapshot_events(state: pd.DataFrame, stages: list[str], exported_at: pd.Timestamp) -> pd.DataFrame:
    """Stage events at the export date for the open deals whose state says more than a
    deal with no history would (a stage past the first, or an expected close date)."""
    informative = (state["stage"] != stages[0]).to_numpy() | state["expected_close_date"].notna().to_numpy()
    return _events(state.loc[informative], exported_at, with_amount=False)


def with_events(history: pd.DataFrame | None, events: pd.DataFrame) -> pd.DataFrame:
    """The stage history plus new rows, sorted by (deal, time) with ties in input order."""
    table = events if history is None else pd.concat([history, events], ignore_index=True)
    return table.sort_values(["deal_id", "entered_at"], kind="stable").reset_index(drop=True)


def check_export_date(deals: pd.DataFrame, exported_at: pd.Timestamp) -> None:
    latest = deals["created_at"].max()
    if pd.notna(latest) and latest > exported_at:
        raise MappingError(f"exported_at {exported_at} is before the latest created_at in the export "
                           f"({latest}): give the date the export was taken (mapping 'exported_at' "
                           f"or ingest --exported-at)")


# ----------------------------------------------------------------------------- appending

def check_appendable(old: CanonicalData, new: CanonicalData, exported_at: pd.Timestamp, where: str) -> None:
    """Refuse, in one line, an export that does not continue the dataset in `where`."""
    if list(old.meta.stages) != list(new.meta.stages):
        raise MappingError(f"--append: the mapping's stage order {new.meta.stages} differs from the one of "
                           f"{where} {old.meta.stages}: use the same stages.order, or ingest into a new folder")
    if old.meta.attributes != new.meta.attributes or old.meta.static or new.meta.static:
        raise MappingError(f"--append: the mapping's attributes {sorted(new.meta.attributes)} differ from "
                           f"those of {where} {sorted(old.meta.attributes)} (or an export is static): "
                           f"use the same mapping")
    if exported_at < old.data_end:
        raise MappingError(f"--append: this export (of {exported_at}) is older than the data in {where} "
                           f"(up to {old.data_end}): append exports in date order")


def append_export(old: CanonicalData, new: CanonicalData, state: pd.DataFrame | None,
                  exported_at: pd.Timestamp, notes: list[str]) -> CanonicalData:
    """`old` continued by the later export `new` (see the module docstring). `state`: the
    open deals' current state of a snapshot-only export (compared with what `old` knew);
    None for an export with a stage history (its rows after `old`'s end are appended)."""
    old_end = old.data_end
    known = old.deals["deal_id"].isin(new.deals["deal_id"])
    added = ~new.deals["deal_id"].isin(old.deals["deal_id"])
    deals, closing = _close_deals(old, new, notes)
    deals = pd.concat([deals, new.deals.loc[added]], ignore_index=True)
    added_ids = set(new.deals.loc[added, "deal_id"])
    still_open = set(old.deals.loc[old.deals["outcome"].isna() & known, "deal_id"]) - closing
    events = [_rows_of(new.stage_events, added_ids)]
    if state is None and new.stage_events is not None:  # a stage history: rows after the stored data are new
        later = _rows_of(new.stage_events, still_open | closing)
        events.append(later.loc[later["entered_at"] > old_end])
    elif state is not None:
        events.append(_changed_state(old, state, still_open, exported_at))
    acts = _rows_of(new.activities, added_ids | still_open | closing)
    if acts is not None and old.activities is not None:
        acts = acts.loc[(acts["occurred_at"] > old_end) | acts["deal_id"].isin(added_ids)]
    notes.append(f"appended: {int(added.sum()):,} new deals, {len(closing):,} closed, "
                 f"{sum(len(e) for e in events if e is not None):,} stage events; "
                 f"{int((~known).sum()):,} stored deals are not in this export (kept as they were)")
    return CanonicalData(deals=deals, meta=replace(old.meta, data_end=max(new.data_end, old_end)),
                         stage_events=_concat(old.stage_events, *events),
                         activities=_concat(old.activities, acts),
                         accounts=_new_accounts(old.accounts, new.accounts))


def _close_deals(old: CanonicalData, new: CanonicalData, notes: list[str]) -> tuple[pd.DataFrame, set]:
    """Stored open deals that the new export shows closed get outcome and closed_at (never
    before their last stored event, which saw them open) and an amount if they had none."""
    deals = old.deals.copy()
    later = new.deals.set_index("deal_id")
    pos = later.index.get_indexer(deals["deal_id"])
    found = pos >= 0
    take = np.maximum(pos, 0)
    outcome = np.where(found, later["outcome"].to_numpy(dtype=object)[take], None)
    closing = (deals["outcome"].isna().to_numpy() & pd.notna(outcome))
    closed = pd.Series(later["closed_at"].to_numpy()[take], index=deals.index).where(closing)
    floor = _last_event_times(old.stage_events, deals["deal_id"])
    moved = closing & (closed < floor).to_numpy()
    closed = closed.mask(moved, floor)
    if moved.any():
        notes.append(f"{int(moved.sum()):,} deals closed before a stored export that showed them open: "
                     f"their close is dated at that export")
    deals.loc[closing, "outcome"] = outcome[closing]
    deals.loc[closing, "closed_at"] = closed[closing]
    fill = closing & deals["amount"].isna().to_numpy()
    deals.loc[fill, "amount"] = later["amount"].to_numpy()[take][fill]
    deals["closed_at"] = deals["closed_at"].astype(TIMESTAMP_DTYPE)
    return deals, set(deals.loc[closing, "deal_id"])


def _changed_state(old: CanonicalData, state: pd.DataFrame, ids: set, exported_at: pd.Timestamp) -> pd.DataFrame:
    """An event at the new export for each still-open deal whose stage, amount or expected
    close date differs from what the dataset knew at its end."""
    before = deals_at(old, old.data_end).set_index("deal_id")
    now = state.loc[state["deal_id"].isin(ids)].reset_index(drop=True)
    then = before.reindex(now["deal_id"])
    stage_moved = now["stage"].to_numpy() != then["stage"].astype(object).to_numpy()
    amount_moved = now["amount"].notna().to_numpy() & (now["amount"].to_numpy() != then["amount"].to_numpy())
    ecd_now, ecd_then = now["expected_close_date"], then["expected_close_date"].reset_index(drop=True)
    ecd_moved = ecd_now.notna().to_numpy() & (ecd_now != ecd_then).to_numpy()
    now = now.assign(amount=now["amount"].where(amount_moved),
                     expected_close_date=ecd_now.where(ecd_moved))
    return _events(now.loc[stage_moved | amount_moved | ecd_moved], exported_at, with_amount=True)


def _events(state: pd.DataFrame, at: pd.Timestamp, with_amount: bool) -> pd.DataFrame:
    n = len(state)
    return pd.DataFrame({
        "deal_id": pd.array(state["deal_id"].to_numpy(), dtype="string"),
        "stage": pd.array(state["stage"].to_numpy(), dtype="string"),
        "entered_at": np.full(n, np.datetime64(at, "us"), dtype=TIMESTAMP_DTYPE),
        "amount": state["amount"].to_numpy(dtype="float64") if with_amount else np.full(n, np.nan),
        "expected_close_date": state["expected_close_date"].to_numpy(dtype=TIMESTAMP_DTYPE)})


def _expected_dates(deals: pd.DataFrame, notes: list[str]) -> pd.Series:
    if "expected_close_date" not in deals:
        return pd.Series(pd.NaT, index=deals.index, dtype=TIMESTAMP_DTYPE)
    parsed, bad = parse_timestamps(deals["expected_close_date"], "ISO8601")
    if bad.any():
        notes.append(f"{int(bad.sum()):,} expected close dates could not be read and are left empty "
                     f"(e.g. '{deals['expected_close_date'][bad].iloc[0]}')")
    return parsed


def _last_stage(ids: pd.Series, history: pd.DataFrame, stages: list[str]) -> pd.Series:
    last = history.loc[history["stage"].isin(stages)].drop_duplicates("deal_id", keep="last")
    return pd.Series(ids.map(last.set_index("deal_id")["stage"]).to_numpy(), dtype="string")


def _last_event_times(events: pd.DataFrame | None, ids: pd.Series) -> pd.Series:
    if events is None or not len(events):
        return pd.Series(pd.NaT, index=ids.index, dtype=TIMESTAMP_DTYPE)
    last = events.groupby("deal_id")["entered_at"].max()
    return pd.Series(ids.map(last).to_numpy(), index=ids.index).astype(TIMESTAMP_DTYPE)


def _rows_of(table: pd.DataFrame | None, ids: set) -> pd.DataFrame | None:
    return None if table is None else table.loc[table["deal_id"].isin(list(ids))]


def _concat(first: pd.DataFrame | None, *more: pd.DataFrame | None) -> pd.DataFrame | None:
    parts = [t for t in (first, *more) if t is not None and len(t)]
    if not parts:
        return first
    return pd.concat(parts, ignore_index=True)


def _new_accounts(old: pd.DataFrame | None, new: pd.DataFrame | None) -> pd.DataFrame | None:
    if old is None or new is None:
        return old if new is None else new
    return pd.concat([old, new.loc[~new["account_id"].isin(old["account_id"])]], ignore_index=True)

"""How deals get their outcome and close date from a mapping's outcome rule (column,
stage or join), the "Close Date is the expected date while open" rule, and the data end.

`dates` maps each canonical date column of the deals table to (parsed, bad, format), as
`features.sources` parsed it; the rules here may move values between its columns.
"""
from __future__ import annotations

import pandas as pd

from features.errors import MappingError
from features.mapping_spec import Mapping, TableSpec
from features.parsing import parse_timestamps

NOT_DATA_TIMES = {"expected_close_date"}  # a plan, not something that happened: never the data end


def derive_outcome(out: pd.DataFrame, rows: pd.DataFrame, joined: pd.Series | None, dates: dict,
                   m: Mapping, tables: dict[str, pd.DataFrame], notes: list[str],
                   exported_at: pd.Timestamp | None) -> pd.Timestamp | None:
    """Fill out['outcome'] (and closed_at, expected_close_date) as the mapping's outcome rule
    says; returns the data end (the censoring time)."""
    spec = m.tables["deals"]
    rule = spec.outcome
    if rule is not None and rule.from_ == "join":
        data_end = data_end_of(m, dates, tables, exported_at)
        _outcome_from_join(out, joined, dates, spec, m, data_end, notes)
        return data_end
    if rule is not None and rule.from_ == "column":
        out["outcome"] = _values_to_outcome(rows[rule.column], rule.won, rule.lost, rule.column)
    elif rule is not None:
        _outcome_from_stage(out, dates, m, tables.get("stage_events"))
    if rule is not None and rule.close_date_is_expected_while_open:
        _close_date_is_expected_while_open(out, dates, notes)
    data_end = data_end_of(m, dates, tables, exported_at)
    if rule is not None and rule.lost_after_days is not None and data_end is not None and not m.static:
        _lost_after_days(out, dates, rule.lost_after_days, data_end, notes)
    return data_end


def _lost_after_days(out: pd.DataFrame, dates: dict, days: int | dict[str, int], data_end: pd.Timestamp,
                     notes: list[str]) -> None:
    """An open deal older than `days` at the data end (per its current stage, when a
    dict) is lost at created_at + days: that moment becomes its close date."""
    is_open = pd.Series(out["outcome"], index=out.index).isna()
    if isinstance(days, dict):
        limit = out["stage"].astype("string").str.strip().map(days).astype("float64")
    else:
        limit = pd.Series(float(days), index=out.index)
    give_up = dates["created_at"][0] + pd.to_timedelta(limit, unit="D")
    lost = (is_open & (give_up <= data_end)).fillna(False).to_numpy(dtype=bool)
    if "closed_at" not in dates:
        out["closed_at"] = None
        dates["closed_at"] = (pd.Series(pd.NaT, index=out.index, dtype="datetime64[us]"),
                              pd.Series(False, index=out.index), None)
    parsed, bad, fmt = dates["closed_at"]
    dates["closed_at"] = (parsed.mask(lost, give_up), bad & ~lost, fmt)
    out["outcome"] = pd.Series(out["outcome"], index=out.index, dtype="object").mask(lost, "lost").to_numpy()
    if "expected_close_date" in dates:  # a lost deal has no expected close date any more
        p, b, f = dates["expected_close_date"]
        dates["expected_close_date"] = (p.mask(lost), b & ~lost, f)
    notes.append(f"{int(lost.sum()):,} open deals older than lost_after_days {days} at the data end "
                 f"({data_end}) are lost at that age")


def _outcome_from_join(out: pd.DataFrame, joined: pd.Series, dates: dict, spec: TableSpec, m: Mapping,
                       data_end: pd.Timestamp | None, notes: list[str]) -> None:
    rule = spec.outcome
    outcome = pd.Series(pd.NA, index=out.index, dtype="string").mask(joined.to_numpy(), "won")
    if m.static:
        outcome = outcome.fillna("lost")
    elif rule.lost_after_days is not None and data_end is not None:
        created = dates["created_at"][0]
        give_up = created + pd.Timedelta(days=rule.lost_after_days)
        lost = outcome.isna() & (give_up <= data_end)
        outcome = outcome.mask(lost, "lost")
        closed = dates["closed_at"][0].mask(lost, give_up)
        dates["closed_at"] = (closed, dates["closed_at"][1], dates["closed_at"][2])
        source = rule.source or spec.join[0].source
        notes.append(f"{int(lost.sum()):,} deals without a row in '{source}' are lost "
                     f"{rule.lost_after_days} days after creation (data end {data_end})")
    out["outcome"] = outcome.to_numpy()


def _close_date_is_expected_while_open(out: pd.DataFrame, dates: dict, notes: list[str]) -> None:
    """An open deal's close date is its expected close date: move it there."""
    is_open = pd.Series(out["outcome"], index=out.index).isna().to_numpy()
    parsed, bad, fmt = dates["closed_at"]
    out["expected_close_date"] = out["closed_at"].where(is_open, None)
    out["closed_at"] = out["closed_at"].where(~is_open, None)
    dates["expected_close_date"] = (parsed.where(is_open), bad & is_open, fmt)
    dates["closed_at"] = (parsed.where(~is_open), bad & ~is_open, fmt)
    moved = int((is_open & parsed.notna().to_numpy()).sum())
    if moved:
        notes.append(f"{moved:,} open deals: their close date is the expected close date "
                     f"(close_date_is_expected_while_open)")


def data_end_of(m: Mapping, dates: dict, tables: dict[str, pd.DataFrame],
                exported_at: pd.Timestamp | None) -> pd.Timestamp | None:
    """The declared data_end, else the export date, else the latest plausible time that
    happened (an estimate before validation: ingestion takes the final one from clean rows)."""
    if m.data_end:
        return pd.Timestamp(m.data_end)
    if exported_at is not None:
        return exported_at
    times = [p for col, (p, _bad, _fmt) in dates.items() if col not in NOT_DATA_TIMES]
    for table, col in (("stage_events", "entered_at"), ("activities", "occurred_at")):
        if table in tables and col in tables[table]:
            times.append(parse_timestamps(tables[table][col], "ISO8601")[0])
    bounds = m.plausible.bounds()
    stamps = [t[(t >= bounds.earliest) & (t <= bounds.latest)].max() for t in times]
    stamps = [s for s in stamps if pd.notna(s)]
    return max(stamps) if stamps else None


def _values_to_outcome(values: pd.Series, won: list, lost: list, column: str) -> pd.Series:
    """won/lost by value; other non-empty values pass through so the validator rejects them."""
    key = _normalise(values)
    won_keys, lost_keys = set(_normalise(pd.Series(won, dtype=object))), set(_normalise(pd.Series(lost, dtype=object)))
    if not key.isin(won_keys).any():
        seen = ", ".join(sorted(values.astype("string").str.strip().dropna().unique())[:10])
        raise MappingError(f"outcome.won: value(s) {won} never occur in column '{column}' "
                           f"(values seen: {seen})")
    text = values.astype("string").str.strip()
    return text.mask(key.isin(won_keys), "won").mask(key.isin(lost_keys), "lost").to_numpy()


def _normalise(values: pd.Series) -> pd.Series:
    """'1', 1, 1.0 and ' 1 ' compare equal; other values compare as stripped text."""
    text = values.astype("string").str.strip()
    number = pd.to_numeric(text, errors="coerce")
    return text.where(number.isna(), number.astype("float64").astype("string"))


def _outcome_from_stage(out: pd.DataFrame, dates: dict, m: Mapping, events: pd.DataFrame | None) -> None:
    won, lost = set(m.stages.won), set(m.stages.lost)
    seen = set()
    if "stage" in out:
        stage = out["stage"].astype("string").str.strip()
        seen |= set(stage.dropna())
        outcome = pd.Series(pd.NA, index=out.index, dtype="string").mask(stage.isin(won), "won") \
            .mask(stage.isin(lost), "lost")
        out["stage"] = stage.mask(stage.isin(won | lost)).to_numpy()  # closed deals have no open stage
    if events is not None:
        seen |= set(events["stage"].astype("string").str.strip().dropna())
    if not won & seen:
        where = "the deals' stage column" + (" or stage_events" if events is not None else "")
        raise MappingError(f"stages.won: none of {sorted(won)} occurs in {where} "
                           f"(values seen: {', '.join(sorted(seen)[:12])})")
    last = _last_closing_events(events, won, lost, m) if events is not None else None
    ids = out["deal_id"].astype("string").str.strip()
    if "stage" not in out:  # the history alone decides: its latest won/lost row
        latest = last.sort_values("entered_at", kind="stable").drop_duplicates("deal_id", keep="last")
        outcome = pd.Series(ids.map(latest.set_index("deal_id")["outcome"]), dtype="string")
    out["outcome"] = outcome.to_numpy()
    if "closed_at" not in dates and last is not None:
        # dated by the latest history row that agrees with the outcome (others are rejects)
        when = last.set_index(last["deal_id"] + "|" + last["outcome"])["entered_at"]
        closed = pd.Series((ids + "|" + outcome.fillna("")).map(when).to_numpy(), index=out.index)
        closed = closed.astype("datetime64[us]").where(outcome.notna().to_numpy())
        out["closed_at"] = closed
        dates["closed_at"] = (closed, pd.Series(False, index=out.index), None)


def _last_closing_events(events: pd.DataFrame, won: set, lost: set, m: Mapping) -> pd.DataFrame:
    """Per deal and outcome, the last plausible won/lost row of its stage history: deal_id,
    outcome and when it happened (a row dated outside `plausible` is a reject, not a close)."""
    stage = events["stage"].astype("string").str.strip()
    entered = parse_timestamps(events["entered_at"], "ISO8601")[0]
    bounds = m.plausible.bounds()
    rows = pd.DataFrame({"deal_id": events["deal_id"].astype("string").str.strip(),
                         "outcome": stage.isin(won).map({True: "won", False: "lost"}), "entered_at": entered})
    usable = stage.isin(won | lost) & (entered >= bounds.earliest) & (entered <= bounds.latest)
    rows = rows[usable.to_numpy(dtype=bool)].sort_values("entered_at", kind="stable")
    return rows.drop_duplicates(["deal_id", "outcome"], keep="last").reset_index(drop=True)

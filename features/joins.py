"""Joins of a table's rows with other files of the export (a star schema: a deals fact file
plus dimension files), each reporting the keys it could not match instead of leaving
silent nulls.

Keys compare as stripped text, after each source's `recode` (see `features.readers`).
A joined file may hold at most one row per key: a second row is a `duplicate_id` reject,
a row without a key a `missing_required_field` reject. Rows of a dimension file that no
deal uses are fine (a product list holds every product); only for the outcome join (the
file of closed deals) is such a row a reject (`unknown_deal`), since it should name a deal.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from features.mapping_spec import JoinSpec
from features.schema import Reason

EXAMPLES = 5  # unmatched keys shown per join
JOIN_COLUMNS = ["source", "key", "rows", "matched", "unmatched_rows", "unmatched_keys", "examples",
                "expected"]


@dataclass
class JoinResult:
    """A left join's outcome: the joined rows, which left rows found a match, the joined
    file's rejects, and one row of the join report (see JOIN_COLUMNS)."""

    rows: pd.DataFrame
    matched: pd.Series  # per left row: a row of the joined file was found
    rejects: pd.DataFrame
    report: dict
    rows_in: int  # rows of the joined file
    clean: int


def left_join(rows: pd.DataFrame, join: JoinSpec, right: pd.DataFrame, table_source: str,
              outcome_join: bool) -> JoinResult:
    """Left join at most one right row per key onto `rows`; report the unmatched left keys."""
    key = _key_text(right[join.right_key])
    right = right.assign(_key=key, _right_row=right.index.to_numpy(dtype="int64"))  # the source row
    left_keys = _key_text(rows[join.key])
    missing, dup = key.isna(), key.duplicated(keep="first") & key.notna()
    unused = ~missing & ~dup & ~key.isin(left_keys.dropna())
    checks = [(missing, Reason.MISSING_REQUIRED, join.right_key),
              (dup, Reason.DUPLICATE_ID, "second row for this key")]
    if outcome_join:
        checks.append((unused, Reason.UNKNOWN_DEAL, "no row with this key in " + table_source))
    parts = [_rejects(right, mask, join.source, reason, detail) for mask, reason, detail in checks]
    rejected = missing | dup | (unused if outcome_join else False)
    good = right.loc[~(missing | dup | unused), ["_key", *join.columns]]
    merged = rows.assign(_key=left_keys).merge(good.assign(_joined=True), on="_key", how="left",
                                                validate="many_to_one")
    matched = merged["_joined"].fillna(False).astype(bool)
    report = _report_row(join, left_keys, matched, outcome_join)
    return JoinResult(rows=merged.drop(columns=["_key", "_joined"]), matched=matched,
                      rejects=pd.concat([p for p in parts if len(p)] or [parts[0]], ignore_index=True),
                      report=report, rows_in=len(right), clean=int((~rejected).sum()))


def unmatched_notes(report: pd.DataFrame) -> list[str]:
    """One warning line per dimension join that left keys unmatched."""
    notes = []
    for r in report.loc[~report["expected"] & (report["unmatched_rows"] > 0)].itertuples(index=False):
        notes.append(f"join {r.source} on {r.key}: {r.unmatched_rows:,} row(s) with {r.unmatched_keys:,} "
                     f"key(s) found no row (e.g. {r.examples}); their joined columns are empty. "
                     f"Recode the key (sources.<name>.recode) if it is spelled two ways")
    return notes


def _key_text(values: pd.Series) -> pd.Series:
    text = values.astype("string").str.strip()
    return text.mask(text == "")


def _report_row(join: JoinSpec, left_keys: pd.Series, matched: pd.Series, outcome_join: bool) -> dict:
    has_key = left_keys.notna().to_numpy()
    missed = left_keys[has_key & ~matched.to_numpy()]
    keys = missed.drop_duplicates()
    return {"source": join.source, "key": join.key, "rows": int(has_key.sum()),
            "matched": int(matched.sum()), "unmatched_rows": len(missed), "unmatched_keys": len(keys),
            "examples": ", ".join(keys.iloc[:EXAMPLES].astype(str)), "expected": outcome_join}


def _rejects(right: pd.DataFrame, mask: pd.Series, table: str, reason: str, detail: str) -> pd.DataFrame:
    return pd.DataFrame({"table": table, "row": right.loc[mask, "_right_row"].to_numpy(dtype="int64"),
                         "deal_id": right.loc[mask, "_key"].to_numpy(), "reason": reason, "detail": detail})

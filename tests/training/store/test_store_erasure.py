"""Forgetting a subject: none of its rows remain in any store table (checked by a scan)
and the audit counts what went without naming it."""
from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy as sa
from store_rows import forecast_rows, score_row

from features.errors import LeadscoreError
from training.store.erasure import erase, erasures, record_erasure
from training.store.forecasts import forecasts, record_forecasts
from training.store.scores import record_scores, scores

SUBJECT_DEALS = ["acct9-deal-1", "acct9-deal-2"]
ACCOUNT = "acct9"


def _fill(store) -> None:
    record_scores(store, [score_row(d) for d in [*SUBJECT_DEALS, "other-deal"]] + [score_row(SUBJECT_DEALS[0])])
    record_forecasts(store, pd.concat([
        forecast_rows(),
        forecast_rows(group_column="account_id", group_value=ACCOUNT),
        forecast_rows(group_column="account_id", group_value="acct1"),
        forecast_rows(group_column="deal_id", group_value=SUBJECT_DEALS[1])]))


def _cells_naming(store, values: list[str]) -> list[tuple[str, str]]:
    """(table, column) of every stored cell that contains one of `values`."""
    hits = []
    with store.engine.connect() as conn:
        for table in sa.inspect(conn).get_table_names():
            for row in conn.execute(sa.text(f"SELECT * FROM {table}")).mappings():
                hits += [(table, col) for col, cell in row.items() if any(v in str(cell) for v in values)]
    return hits


def test_forgetting_an_account_leaves_no_row_of_it_and_audits_the_counts(store):
    _fill(store)
    erasure = erase(store, deal_ids=SUBJECT_DEALS, account_id=ACCOUNT)
    assert erasure.rows_deleted == {"scores": 3, "forecasts": 2}
    assert _cells_naming(store, [ACCOUNT, *SUBJECT_DEALS]) == []
    assert scores(store)["deal_id"].tolist() == ["other-deal"]
    assert forecasts(store)["group_value"].tolist() == ["(all)", "acct1"]
    audit = erasures(store)
    assert audit[["subject_kind", "subject_count", "table_name", "rows_deleted"]].values.tolist() == [
        ["account", 3, "scores", 3], ["account", 3, "forecasts", 2]]
    assert (audit["erasure_id"] == erasure.erasure_id).all()


def test_forgetting_a_deal_only_removes_that_deal(store):
    _fill(store)
    erasure = erase(store, deal_ids=[SUBJECT_DEALS[1]])
    assert erasure.rows_deleted == {"scores": 1, "forecasts": 1}
    assert sorted(scores(store)["deal_id"]) == sorted([SUBJECT_DEALS[0], SUBJECT_DEALS[0], "other-deal"])
    assert erasures(store)["subject_kind"].unique().tolist() == ["deal"]


def test_the_forget_command_can_add_the_canonical_tables_to_the_audit(store):
    erasure = erase(store, deal_ids=["nobody"])
    record_erasure(store, erasure, "deal", 1, {"deals": 1, "stage_events": 4})
    audit = erasures(store)
    assert audit["table_name"].tolist() == ["scores", "forecasts", "deals", "stage_events"]
    assert audit["rows_deleted"].tolist() == [0, 0, 1, 4]
    assert audit["erasure_id"].nunique() == 1


def test_an_erasure_must_name_its_subject(store):
    with pytest.raises(LeadscoreError, match="name the subject"):
        erase(store)

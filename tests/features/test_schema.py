"""The validator: every reject reason on small hand-built tables, and nothing dropped
silently (rows in == clean + rejected for every table)."""
from __future__ import annotations

import pandas as pd
import pytest

from features.errors import SchemaError
from features.schema import TIMESTAMP_DTYPE, DatasetMeta, Reason
from features.validation import Plausible, validate

META = DatasetMeta(stages=["lead", "proposal"], attributes={"employees": "numeric", "industry": "categorical"})
GOOD_DEAL = {"deal_id": "G", "created_at": "2024-01-01", "closed_at": "2024-02-01", "outcome": "won",
             "amount": "100", "stage": "proposal", "employees": "10", "industry": "saas"}
GOOD_EVENT = {"deal_id": "G", "stage": "lead", "entered_at": "2024-01-02"}
PLAUSIBLE = Plausible(earliest=pd.Timestamp("1990-01-01"), latest=pd.Timestamp("2030-01-01"), max_amount=1e12,
                      max_number=1e15)
GOOD_ACTIVITY = {"deal_id": "G", "occurred_at": "2024-01-03", "type": "call"}


def deals(*overrides: dict) -> pd.DataFrame:
    """A clean deal G followed by one row per override (each a variant of G under a new id)."""
    rows = [GOOD_DEAL] + [{**GOOD_DEAL, "deal_id": "B", **o} for o in overrides]
    return pd.DataFrame(rows)


def run(deal_rows: pd.DataFrame, events: list[dict] | None = None, activities: list[dict] | None = None,
        accounts: list[dict] | None = None, meta: DatasetMeta = META, **checks):
    return validate(deal_rows, meta,
                    stage_events=None if events is None else pd.DataFrame([GOOD_EVENT, *events]),
                    activities=None if activities is None else pd.DataFrame([GOOD_ACTIVITY, *activities]),
                    accounts=None if accounts is None else pd.DataFrame(accounts), **checks)


# (case id, expected table, expected reason, arguments for run())
CASES = [
    ("duplicate id", "deals", Reason.DUPLICATE_ID, dict(deal_rows=deals({"deal_id": "G"}))),
    ("duplicate account", "accounts", Reason.DUPLICATE_ID,
     dict(deal_rows=deals(), accounts=[{"account_id": "A"}, {"account_id": "A"}])),
    ("missing deal id", "deals", Reason.MISSING_REQUIRED, dict(deal_rows=deals({"deal_id": " "}))),
    ("missing created_at", "deals", Reason.MISSING_REQUIRED, dict(deal_rows=deals({"created_at": None}))),
    ("missing entered_at", "stage_events", Reason.MISSING_REQUIRED,
     dict(deal_rows=deals(), events=[{**GOOD_EVENT, "entered_at": None}])),
    ("unparseable created_at", "deals", Reason.UNPARSEABLE_DATE, dict(deal_rows=deals({"created_at": "someday"}))),
    ("unparseable closed_at", "deals", Reason.UNPARSEABLE_DATE, dict(deal_rows=deals({"closed_at": "soon"}))),
    ("unparseable entered_at", "stage_events", Reason.UNPARSEABLE_DATE,
     dict(deal_rows=deals(), events=[{**GOOD_EVENT, "entered_at": "yesterday"}])),
    ("unparseable occurred_at", "activities", Reason.UNPARSEABLE_DATE,
     dict(deal_rows=deals(), activities=[{**GOOD_ACTIVITY, "occurred_at": "32/13/2024"}])),
    ("unparseable amount", "deals", Reason.UNPARSEABLE_NUMBER, dict(deal_rows=deals({"amount": "1,2k"}))),
    ("unparseable numeric attribute", "deals", Reason.UNPARSEABLE_NUMBER,
     dict(deal_rows=deals({"employees": "01-May"}))),
    ("unparseable event amount", "stage_events", Reason.UNPARSEABLE_NUMBER,
     dict(deal_rows=deals(), events=[{**GOOD_EVENT, "amount": "lots"}])),
    ("close before create", "deals", Reason.CLOSE_BEFORE_CREATE, dict(deal_rows=deals({"closed_at": "2023-12-31"}))),
    ("event before create", "stage_events", Reason.EVENT_BEFORE_CREATE,
     dict(deal_rows=deals(), events=[{**GOOD_EVENT, "entered_at": "2023-12-01"}])),
    ("activity before create", "activities", Reason.EVENT_BEFORE_CREATE,
     dict(deal_rows=deals(), activities=[{**GOOD_ACTIVITY, "occurred_at": "2023-12-01"}])),
    ("event after close", "stage_events", Reason.EVENT_AFTER_CLOSE,
     dict(deal_rows=deals(), events=[{**GOOD_EVENT, "entered_at": "2024-03-01"}])),
    ("event for unknown deal", "stage_events", Reason.UNKNOWN_DEAL,
     dict(deal_rows=deals(), events=[{**GOOD_EVENT, "deal_id": "nobody"}])),
    ("activity for unknown deal", "activities", Reason.UNKNOWN_DEAL,
     dict(deal_rows=deals(), activities=[{**GOOD_ACTIVITY, "deal_id": "nobody"}])),
    ("negative amount", "deals", Reason.NEGATIVE_AMOUNT, dict(deal_rows=deals({"amount": "-1"}))),
    ("negative event amount", "stage_events", Reason.NEGATIVE_AMOUNT,
     dict(deal_rows=deals(), events=[{**GOOD_EVENT, "amount": -3}])),
    ("outcome without close date", "deals", Reason.OUTCOME_WITHOUT_CLOSE, dict(deal_rows=deals({"closed_at": None}))),
    ("close date without outcome", "deals", Reason.CLOSE_WITHOUT_OUTCOME, dict(deal_rows=deals({"outcome": None}))),
    ("invalid outcome", "deals", Reason.INVALID_OUTCOME, dict(deal_rows=deals({"outcome": "maybe"}))),
    ("unknown deal stage", "deals", Reason.UNKNOWN_STAGE, dict(deal_rows=deals({"stage": "demo"}))),
    ("unknown event stage", "stage_events", Reason.UNKNOWN_STAGE,
     dict(deal_rows=deals(), events=[{**GOOD_EVENT, "stage": "demo"}])),
    ("parent deal rejected", "stage_events", Reason.DEAL_REJECTED,
     dict(deal_rows=deals({"amount": "-1"}), events=[{**GOOD_EVENT, "deal_id": "B"}])),
    ("parent deal rejected (activity)", "activities", Reason.DEAL_REJECTED,
     dict(deal_rows=deals({"amount": "-1"}), activities=[{**GOOD_ACTIVITY, "deal_id": "B"}])),
    ("date out of range", "deals", Reason.DATE_OUT_OF_RANGE,
     dict(deal_rows=deals({"created_at": "1970-01-01"}), plausible=PLAUSIBLE)),
    ("activity date out of range", "activities", Reason.DATE_OUT_OF_RANGE,
     dict(deal_rows=deals(), activities=[{**GOOD_ACTIVITY, "occurred_at": "9999-12-31"}], plausible=PLAUSIBLE)),
    ("infinite amount", "deals", Reason.NUMBER_OUT_OF_RANGE, dict(deal_rows=deals({"amount": "inf"}), plausible=PLAUSIBLE)),
    ("absurd numeric attribute", "deals", Reason.NUMBER_OUT_OF_RANGE,
     dict(deal_rows=deals({"employees": "1e400"}), plausible=PLAUSIBLE)),
    ("history row contradicting the outcome", "stage_events", Reason.CONTRADICTS_OUTCOME,
     dict(deal_rows=deals(), events=[{**GOOD_EVENT, "stage": "proposal"}], closing={"proposal": "lost"})),
]


@pytest.mark.parametrize("table, reason, kwargs", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_bad_row_is_rejected_with_its_reason(table, reason, kwargs):
    result = run(**kwargs)
    rejects = result.rejects
    assert rejects[["table", "reason"]].value_counts().to_dict() == {(table, reason): 1} | (
        {("deals", Reason.NEGATIVE_AMOUNT): 1} if reason == Reason.DEAL_REJECTED else {})
    # the good deal G and its good rows always survive
    assert "G" in set(result.data.deals["deal_id"])
    assert_nothing_dropped(kwargs, result)


def test_every_reason_has_a_case():
    reasons = {v for k, v in vars(Reason).items() if not k.startswith("_")}
    assert reasons == {c[2] for c in CASES}


def assert_nothing_dropped(kwargs: dict, result) -> None:
    """rows in == clean + rejected for every table."""
    sizes = {"deals": len(kwargs["deal_rows"]),
             "stage_events": None if kwargs.get("events") is None else 1 + len(kwargs["events"]),
             "activities": None if kwargs.get("activities") is None else 1 + len(kwargs["activities"]),
             "accounts": None if kwargs.get("accounts") is None else len(kwargs["accounts"])}
    for table, rows_in in sizes.items():
        if rows_in is None:
            continue
        clean = len(getattr(result.data, table))
        rejected = int((result.rejects["table"] == table).sum())
        assert rows_in == clean + rejected, table


def test_rows_in_equals_clean_plus_rejected_on_a_mixed_table():
    raw = deals({"amount": "-1"}, {"deal_id": "C", "created_at": "bad"}, {"deal_id": "D"},
                {"deal_id": "D", "stage": "lead"}, {"deal_id": "E", "outcome": "lost"}, {"deal_id": None})
    events = [{**GOOD_EVENT, "deal_id": d} for d in ["B", "C", "D", "E", "X", "G"]]
    result = run(raw, events=events)
    assert_nothing_dropped({"deal_rows": raw, "events": events}, result)
    assert sorted(result.data.deals["deal_id"]) == ["D", "E", "G"]
    assert len(result.rejects) == 4 + 3  # deals B, C, second D, None; events B, C, X


def test_rejects_carry_source_row_and_deal_id():
    result = run(deals({}, {"deal_id": "C", "amount": "-2"}))
    row = result.rejects.iloc[0]
    assert (row["table"], row["row"], row["deal_id"], row["reason"]) == ("deals", 2, "C", Reason.NEGATIVE_AMOUNT)
    assert "-2" in row["detail"]


def test_duplicate_keeps_the_first_valid_row():
    # the first row of id D is bad: the second, valid one is kept instead of losing both
    raw = deals({"deal_id": "D", "amount": "-1"}, {"deal_id": "D"})
    result = run(raw, events=[{**GOOD_EVENT, "deal_id": "D"}])
    assert list(result.data.deals["deal_id"]) == ["G", "D"]
    assert list(result.rejects["reason"]) == [Reason.NEGATIVE_AMOUNT]
    assert len(result.data.stage_events) == 2


def test_clean_tables_are_typed():
    result = run(deals({"deal_id": "C", "outcome": None, "closed_at": None, "employees": None}),
                 events=[], activities=[])
    d = result.data.deals
    assert d["created_at"].dtype == TIMESTAMP_DTYPE and d["closed_at"].dtype == TIMESTAMP_DTYPE
    assert d["amount"].dtype == "float64" and d["employees"].dtype == "float64"
    assert d["industry"].dtype == "string" and d["deal_id"].dtype == "string"
    assert result.data.stage_events["entered_at"].dtype == TIMESTAMP_DTYPE
    assert result.rejects.empty and result.counts().empty


def test_static_export_needs_no_dates():
    meta = DatasetMeta(stages=["lead"], static=True)
    result = validate(pd.DataFrame({"deal_id": ["a", "b", "a"], "outcome": ["won", "lost", "won"]}), meta)
    assert list(result.data.deals["deal_id"]) == ["a", "b"]
    assert list(result.rejects["reason"]) == [Reason.DUPLICATE_ID]


def test_a_missing_required_column_is_a_schema_error():
    with pytest.raises(SchemaError, match="created_at"):
        validate(pd.DataFrame({"deal_id": ["a"]}), META)


def test_declared_attribute_absent_is_a_schema_error():
    with pytest.raises(SchemaError, match="employees"):
        validate(pd.DataFrame({"deal_id": ["a"], "created_at": ["2024-01-01"]}), META)

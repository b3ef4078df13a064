"""The request path (`payload_arrays` -> `FeatureBuilder.columns`) equals the canonical path
(`canonical_from_records` -> `validate` -> `FeatureBuilder.transform`): the same features
for clean payloads and the same rejects, row for row, for bad ones, whether or not the
deals went through the request schema first."""
from __future__ import annotations

import datetime as dt

import models_cache
import numpy as np
import pandas as pd
import pytest
from payloads import canonical_from_records, payload_records

from features.arrays import encode, level_codes
from features.build import FeatureBuilder
from features.payload import payload_arrays
from serving.schemas import ScoreRequest

UTC2 = dt.timezone(dt.timedelta(hours=2))


@pytest.fixture(scope="module")
def data():
    return models_cache.small_data()[0]


@pytest.fixture(scope="module")
def builder(data):
    return FeatureBuilder().fit(data)


def parsed(raw: list[dict]) -> list[dict]:
    """Payload deals as the service receives them: through the request schema."""
    deals = ScoreRequest.model_validate({"deals": raw}).deals
    return [d if isinstance(d, dict) else d.model_dump(exclude_none=True) for d in deals]


def varied(records: list[dict]) -> list[dict]:
    """Clean payloads exercising every branch: offsets, no history, no activities key, an
    empty activity list, unseen categories, numeric attributes as text, missing fields."""
    out = [dict(r) for r in records]
    for i, rec in enumerate(out):
        kind = i % 7
        if kind == 1:  # no history: the current stage entered at stage_entered_at
            rec.pop("stage_history")
            rec["stage_entered_at"] = rec["created_at"]
        elif kind == 2:
            rec.pop("stage_history")
        elif kind == 3:
            rec["owner"] = "owner-never-seen"
            rec["industry"] = "industry-never-seen"
        elif kind == 4:
            rec["company_size"] = str(rec.get("company_size", "")) if rec.get("company_size") is not None else None
            rec["activities"] = []
        elif kind == 5:
            for key in ("amount", "source", "company_size", "industry"):
                rec.pop(key, None)
        elif kind == 6:
            rec["created_at"] = pd.Timestamp(rec["created_at"]).tz_localize("UTC").tz_convert(UTC2).isoformat()
    return out


@pytest.mark.parametrize("served", [False, True])  # with the lookups a served model keeps, or built per call
@pytest.mark.parametrize("days_before_end", [15, 200])
def test_features_equal_the_canonical_path(data, builder, days_before_end, served):
    as_of = data.data_end - pd.Timedelta(days=days_before_end)
    records = parsed(varied(payload_records(data, as_of)[:250]))
    want = builder.transform(canonical_from_records(records, data.meta).data, as_of)
    checked = payload_arrays(records, data.meta)
    assert checked.rejects == []
    at = np.full(len(records), np.datetime64(as_of), dtype="datetime64[us]")
    got = builder.columns(checked.arrays, np.arange(len(records)), at, builder.lookups() if served else None)
    assert list(want["deal_id"]) == [r["deal_id"] for r in records]
    assert list(got) == builder.feature_names_
    for name, values in got.items():
        expected = want[name]
        if isinstance(expected.dtype, pd.CategoricalDtype):
            np.testing.assert_array_equal(values, expected.cat.codes.to_numpy(), err_msg=name)
        else:
            np.testing.assert_array_equal(values, expected.to_numpy(dtype="float64"), err_msg=name)


def test_a_batch_without_any_activities_has_unknown_activity_features(data, builder):
    records = [{k: v for k, v in r.items() if k != "activities"} for r in payload_records(data, data.data_end)[:5]]
    checked = payload_arrays(parsed(records), data.meta)
    assert checked.arrays.activities is None
    at = np.full(5, np.datetime64(data.data_end), dtype="datetime64[us]")
    assert np.isnan(builder.columns(checked.arrays, np.arange(5), at)["activities_30d"]).all()


def test_level_codes_encode_like_pandas():
    levels = pd.Index(["a", "b", "c10", "d"], dtype="string")
    values = np.array(["b", None, "zz", "d", "a", "c10", "C10"], dtype=object)
    want = levels.get_indexer(values)
    np.testing.assert_array_equal(encode(levels, values, len(values), level_codes(levels)), want)
    np.testing.assert_array_equal(encode(levels, values, len(values)), want)


def _bad(records: list[dict]) -> list[dict]:
    out = [dict(r, stage_history=[dict(h) for h in r.get("stage_history", [])],
                activities=[dict(a) for a in r.get("activities", [])]) for r in records]
    out[0]["stage"] = "nowhere"  # unknown stage: its history and activities go with it
    out[0]["stage_history"][-1]["stage"] = "nowhere"
    out[1]["stage_history"][0]["stage"] = "limbo"  # unknown stage in the history only
    out[1]["stage_history"][0]["entered_at"] = "2000-01-01T00:00:00"  # and before creation: first reason wins
    out[2]["stage_history"][0]["entered_at"] = "2000-01-01T00:00:00"
    out[3]["activities"].append({"occurred_at": "1999-12-31T23:00:00+01:00", "type": "call"})
    out[4]["company_size"] = "a lot"
    out[5]["company_size"] = "12"  # numeric text is fine
    out[6].pop("stage_history")
    out[6]["stage"] = "void"  # no history: the implied entry carries the unknown stage too
    return out


def rejects_frame(rejects) -> pd.DataFrame:
    return pd.DataFrame([(r.table, r.row, r.deal_id, r.reason, r.detail) for r in rejects],
                        columns=["table", "row", "deal_id", "reason", "detail"])


def assert_same_rejects(got, want: pd.DataFrame) -> None:
    key = ["table", "row"]
    pd.testing.assert_frame_equal(rejects_frame(got).sort_values(key).reset_index(drop=True),
                                  want[rejects_frame([]).columns].sort_values(key).reset_index(drop=True),
                                  check_dtype=False)


def test_rejects_equal_the_validator(data):
    records = parsed(_bad(payload_records(data, data.data_end)[:12]))
    got = payload_arrays(records, data.meta).rejects
    assert {"unknown_stage", "event_before_create", "unparseable_number",
            "parent_deal_rejected"} <= {r.reason for r in got}
    assert_same_rejects(got, canonical_from_records(records, data.meta).rejects)


def _unchecked(records: list[dict]) -> list[dict]:
    """Deals the request schema would refuse (the pyfunc model's input is not schema-checked)."""
    out = [dict(r, stage_history=[dict(h) for h in r.get("stage_history", [])]) for r in records]
    out[0]["deal_id"] = ""
    out[1]["created_at"] = "not a date"
    out[2].pop("created_at")
    out[3]["amount"] = "12 dollars"
    out[4]["amount"] = -5.0
    out[7]["stage_history"][-1]["entered_at"] = "someday"
    out[8]["created_at"] = "2024-01-05T10:00:00"  # text that parses is fine
    return out


def test_unchecked_deals_are_rejected_like_the_validator(data):
    records = _unchecked(payload_records(data, data.data_end)[:10])
    got = payload_arrays(records, data.meta).rejects
    assert {"missing_required_field", "unparseable_date", "unparseable_number", "negative_amount"} \
        <= {r.reason for r in got}
    assert_same_rejects(got, canonical_from_records(records, data.meta).rejects)


def test_a_repeated_deal_id_is_rejected_with_its_children(data):
    # (the validator would attach the children of the repeat to the first deal of that id)
    records = payload_records(data, data.data_end)[:3]
    records[2] = dict(records[2], deal_id=records[0]["deal_id"])
    got = payload_arrays(records, data.meta).rejects
    assert [(r.reason, r.path) for r in got if r.table == "deals"] == [("duplicate_id", "deals[2].deal_id")]
    assert {r.deal for r in got} == {2} and {r.reason for r in got if r.table != "deals"} == {"parent_deal_rejected"}


def test_rejects_know_their_request_paths(data):
    records = parsed(_bad(payload_records(data, data.data_end)[:12]))
    paths = {(r.reason, r.path) for r in payload_arrays(records, data.meta).rejects}
    assert ("unknown_stage", "deals[0].stage") in paths
    assert ("unknown_stage", "deals[1].stage_history[0].stage") in paths
    assert ("unparseable_number", "deals[4].company_size") in paths
    assert ("unknown_stage", "deals[6].stage") in paths


def test_facts_carry_every_dated_field(data):
    records = parsed(payload_records(data, data.data_end)[:3])
    facts = payload_arrays(records, data.meta).facts
    assert set(facts) == {"created_at", "stage_history", "activities"}
    deal, times = facts["activities"]
    assert len(deal) == sum(len(r.get("activities", [])) for r in records) and times.dtype == "datetime64[us]"

"""The current stage of a current-state export: a fact dated at the export, whose entry no
export observed. Time in such a stay is unknown (NaN), never 0 or "since the export", in the
features, `deals_at` and the dwell history; a stay that began between two exports (seen
elsewhere by the earlier one) is timed from the export that showed it; a recorded stage
history keeps every time in stage. Hand-built exports (`test_mapping_star`'s star schema)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from features.build import FeatureBuilder
from features.dataset import read_dataset
from features.snapshots import deals_at
from features.sources import ingest
from tests.features.test_mapping_star import EXPORTED, LATER, write_export

SECOND = "2024-04-01"


@pytest.fixture
def snapshots(tmp_path):
    """The star export of 2024-03-01, then LATER appended as the export of 2024-04-01."""
    out = tmp_path / "out"
    ingest(write_export(tmp_path / "first"), out)
    ingest(write_export(tmp_path / "later", LATER), out, append=True, exported_at=SECOND)
    return read_dataset(out)


def features_at(data, as_of: str) -> pd.DataFrame:
    return FeatureBuilder().fit(data).transform(data, [as_of]).set_index("deal_id")


def test_one_export_gives_no_time_in_stage_and_no_usual_time(tmp_path):
    ingest(write_export(tmp_path / "first"), tmp_path / "out")
    data = read_dataset(tmp_path / "out")
    X = features_at(data, EXPORTED)
    assert X.loc["O3", "stage"] == "Negotiation"  # the stage is the export's fact
    # O3 (Negotiation), O5 (Proposal) and O4 (first stage): since when, the export does not say
    assert X[["days_in_stage", "stage_velocity", "stage_mean_dwell_days"]].isna().all().all()
    assert (X["deal_age_days"] > 0).all()  # the age is known: created_at is a recorded date
    before = features_at(data, "2024-02-20")
    assert before["days_in_stage"].isna().all() and (before["stage"] == "Prospecting").all()


def test_a_stay_begun_between_two_exports_is_timed_from_the_later_one(snapshots):
    X = features_at(snapshots, "2024-04-11")
    now = deals_at(snapshots, "2024-04-11").set_index("deal_id")
    # O4: Prospecting at the first export, Qualification at the second: entered in between
    assert X.loc["O4", "stage"] == "Qualification" and X.loc["O4", "days_in_stage"] == 10
    assert now.loc["O4", "days_in_stage"] == 10 and now.loc["O4", "stage_entered_at"] == pd.Timestamp(SECOND)
    # O5: Proposal at both exports (entered before the first); O7: created between the
    # exports and already in Proposal at the second; O6: first stage since its creation, unseen
    for deal in ["O5", "O7", "O6"]:
        assert np.isnan(X.loc[deal, "days_in_stage"]) and np.isnan(now.loc[deal, "days_in_stage"]), deal
        assert pd.isna(now.loc[deal, "stage_entered_at"]), deal
    assert X.loc[["O5", "O7", "O6"], "stage"].tolist() == ["Proposal", "Proposal", "Prospecting"]


def test_the_same_events_as_a_recorded_history_keep_their_time_in_stage(snapshots):
    recorded = replace(snapshots, meta=replace(snapshots.meta, stage_history="recorded"))
    X = features_at(recorded, "2024-04-11")
    assert X.loc[["O5", "O7", "O6"], "days_in_stage"].tolist() == [41, 10, 32]  # entries as dated
    assert not features_at(recorded, EXPORTED)["days_in_stage"].isna().any()


def test_later_exports_do_not_change_what_is_known_at_an_earlier_date(snapshots, tmp_path):
    ingest(write_export(tmp_path / "first"), tmp_path / "one")
    one = read_dataset(tmp_path / "one")
    builder = FeatureBuilder().fit(one)  # the same fitted history: only the data differ
    for as_of in ["2024-02-20", EXPORTED, "2024-03-20"]:
        both = builder.transform(snapshots, [as_of]).set_index("deal_id").drop(columns="as_of")
        first = builder.transform(one, [as_of]).set_index("deal_id").drop(columns="as_of")
        shared = first.index.intersection(both.index)
        pd.testing.assert_frame_equal(both.loc[shared, ["stage", "days_in_stage", "stage_changes"]],
                                      first.loc[shared, ["stage", "days_in_stage", "stage_changes"]])


def test_the_pipeline_analytics_time_the_same_stays_as_the_features(snapshots):
    """One rule (`stage_seen_from`): a stay the first export found the deal in is not timed
    by the analytics either (its stage is known, its entry is not)."""
    from features.analytics.state import build_state

    state = build_state(snapshots, pd.Timestamp("2024-04-11"))
    spells = state.spells.assign(deal=state.deals["deal_name"].to_numpy()[state.spells["deal_id"]])
    o3 = spells.loc[spells["deal"] == "O3"].set_index("stage")
    # O3: in Negotiation at the first export (03-01), won on 03-20: won from Negotiation, after
    # an unknown time there (19 days "since the export" before the one rule)
    assert o3.loc["Negotiation", "exit"] == "won" and np.isnan(o3.loc["Negotiation", "dwell_days"])
    assert spells["dwell_days"].isna().all()  # no stay of these exports was seen from its entry to its end

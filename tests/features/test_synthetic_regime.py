"""`generate --regime-change`: deals created before the date are untouched, deals after it
live in the changed world, and the truth records the change."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.errors import LeadscoreError
from features.synthetic import generate_data
from features.synthetic.regime import RegimeChange, pairs

AT = "2024-01-01"


@pytest.fixture(scope="module")
def both():
    plain = generate_data(3000, seed=5)
    changed = generate_data(3000, seed=5, regime=RegimeChange(AT, stage_slowdown=(("proposal", 3.0),)))
    return plain, changed


def test_deals_before_the_change_keep_their_attributes(both):
    (plain, plain_truth), (changed, truth) = both
    before = (plain.deals["created_at"] < AT).to_numpy()
    cols = ["deal_id", "created_at", "source", "segment", "product", "owner", "account_id"]
    pd.testing.assert_frame_equal(plain.deals.loc[before, cols], changed.deals.loc[before, cols])
    np.testing.assert_array_equal(plain_truth["logit_observed"][before], truth["logit_observed"][before])
    assert truth["after_regime_change"].to_numpy().tolist() == (~before).tolist()
    assert "after_regime_change" not in plain_truth and "regime_change" not in plain_truth.attrs["params"]


def test_deals_after_the_change_live_in_the_changed_world(both):
    (plain, plain_truth), (changed, truth) = both
    after = (changed.deals["created_at"] >= AT).to_numpy()
    deals = changed.deals[after]
    assert 0.15 < (deals["product"] == "Copilot").mean() < 0.35
    assert (plain.deals.loc[after, "product"] == "Copilot").sum() == 0
    ratio = truth.loc[after, "amount_at_creation"].median() / plain_truth.loc[after, "amount_at_creation"].median()
    assert 1.3 < ratio < 1.9
    outbound = (changed.deals["source"] == "outbound").to_numpy() & after
    drop = plain_truth.loc[outbound, "p_win_true"].mean() - truth.loc[outbound, "p_win_true"].mean()
    assert drop > 0.1
    referral = (changed.deals["source"] == "referral").to_numpy() & after & \
        (changed.deals["product"] != "Copilot").to_numpy()
    assert abs(np.log(truth.loc[referral, "amount_at_creation"] / plain_truth.loc[referral, "amount_at_creation"])
               .median() - np.log(1.4)) < 0.05

    def proposal_days(events, ids):
        """Median days from the first entry into proposal to the first into negotiation."""
        first = events[events["deal_id"].isin(ids)].groupby(["deal_id", "stage"])["entered_at"].min().unstack()
        return ((first["negotiation"] - first["proposal"]).dt.total_seconds() / 86400).median()

    ids = changed.deals.loc[after, "deal_id"]
    assert proposal_days(changed.stage_events, ids) > 2 * proposal_days(plain.stage_events, ids)
    assert truth.attrs["params"]["regime_change"]["at"] == AT


def test_bad_regime_options_are_one_line_errors():
    with pytest.raises(LeadscoreError, match="not a date"):
        RegimeChange("someday")
    with pytest.raises(LeadscoreError, match="unknown source or stage"):
        RegimeChange(AT, win_shift=(("carrier pigeon", 1.0),))
    with pytest.raises(LeadscoreError, match="not name=number"):
        pairs("outbound=-1,inbound", "--regime-win-shift")
    assert pairs(" outbound=-1, inbound=0.5 ", "x") == (("outbound", -1.0), ("inbound", 0.5))

"""The generator: determinism, contract, and the dynamics real pipelines have."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from features.dataset import read_dataset
from features.errors import LeadscoreError
from features.synthetic import generate, generate_data, load_truth
from features.validation import validate

STAGE_INDEX = {"lead": 0, "qualified": 1, "proposal": 2, "negotiation": 3}


@pytest.fixture(scope="module")
def generated():
    return generate_data(20_000, seed=11)


def _days(delta: pd.Series) -> pd.Series:
    return delta.dt.total_seconds() / 86_400


def test_same_seed_same_frames_different_seed_different():
    a, ta = generate_data(1_500, seed=3)
    b, tb = generate_data(1_500, seed=3)
    c, _ = generate_data(1_500, seed=4)
    for name in ("deals", "stage_events", "activities", "accounts"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    pd.testing.assert_frame_equal(ta, tb)
    assert not a.deals["created_at"].equals(c.deals["created_at"])
    assert not a.stage_events["amount"].equals(c.stage_events["amount"])


def test_output_passes_validation_with_zero_rejects(generated):
    data, _ = generated
    again = validate(data.deals, data.meta, data.stage_events, data.activities, data.accounts)
    assert again.rejects.empty
    assert len(again.data.deals) == len(data.deals) == 20_000
    assert data.meta.stages == ["lead", "qualified", "proposal", "negotiation"]
    assert data.meta.attributes == {"industry": "categorical", "company_size": "numeric"}
    assert data.deals["deal_id"].str.match(r"^D\d{7}$").all()
    assert data.deals["owner"].nunique() == 40 and data.deals["team"].nunique() == 5
    assert data.deals["region"].nunique() == 4 and data.deals["product"].nunique() == 3
    assert set(data.deals["segment"]) == {"SMB", "MidMarket", "Enterprise"}
    assert data.deals.groupby("account_id").size().max() > 1  # accounts with repeat deals
    assert data.deals["account_id"].isin(data.accounts["account_id"]).all()


def test_first_event_is_lead_at_creation(generated):
    data, _ = generated
    first = data.stage_events.groupby("deal_id", sort=False).head(1).set_index("deal_id")
    deals = data.deals.set_index("deal_id")
    assert len(first) == len(deals)
    assert (first["stage"] == "lead").all()
    assert (first["entered_at"] == deals.loc[first.index, "created_at"]).all()


def test_realistic_volumes(generated):
    data, _ = generated
    d = data.deals
    closed = d[d["outcome"].notna()]
    win_rate = (closed["outcome"] == "won").mean()
    won = d[d["outcome"] == "won"]
    cycle = _days(won["closed_at"] - won["created_at"]).median()
    assert 0.25 <= win_rate <= 0.35
    assert 40 <= cycle <= 90
    assert 6 <= len(data.stage_events) / len(d) <= 14
    assert 10 <= len(data.activities) / len(d) <= 20


def test_quarter_end_months_close_more_won_deals(generated):
    data, _ = generated
    won = data.deals[data.deals["outcome"] == "won"]
    per_month = won["closed_at"].dt.to_period("M").value_counts().sort_index()
    months = per_month.index[2:-2]  # edges are ramp-up and censoring
    quarter_end = [m for m in months if m.month % 3 == 0]
    ratios = [per_month[m] / ((per_month[m - 1] + per_month[m + 1]) / 2) for m in quarter_end]
    assert np.mean(ratios) > 1.15
    assert sum(r > 1 for r in ratios) >= len(ratios) - 1


def test_bigger_deals_win_less_and_take_longer(generated):
    data, _ = generated
    first_amount = data.stage_events.groupby("deal_id", sort=False)["amount"].first()
    d = data.deals.assign(start_amount=data.deals["deal_id"].map(first_amount))
    d = d[d["outcome"].notna()].copy()
    d["size"] = pd.qcut(d["start_amount"], 4, labels=False)
    win = d.groupby("size")["outcome"].apply(lambda s: (s == "won").mean())
    won = d[d["outcome"] == "won"]
    cycle = _days(won["closed_at"] - won["created_at"]).groupby(won["size"]).median()
    assert win[3] < win[0] - 0.05
    assert cycle[3] > cycle[0] * 1.15


def test_sources_and_owners_differ_in_win_rate(generated):
    data, _ = generated
    d = data.deals[data.deals["outcome"].notna()]
    won = d["outcome"] == "won"
    by_source = won.groupby(d["source"]).mean()
    assert by_source["referral"] > by_source["outbound"] + 0.1
    table = pd.crosstab(d["owner"], won)
    assert stats.chi2_contingency(table)[1] < 1e-6


def test_regressions_and_pushes_are_recorded(generated):
    data, _ = generated
    ev = data.stage_events
    same_deal = ev["deal_id"].eq(ev["deal_id"].shift())
    idx = ev["stage"].map(STAGE_INDEX)
    regress = same_deal & (idx < idx.shift())
    same_stage = same_deal & (idx == idx.shift())
    push = same_stage & ev["expected_close_date"].gt(ev["expected_close_date"].shift())
    assert ev.loc[regress, "deal_id"].nunique() > 0.01 * len(data.deals)
    assert ev.loc[push, "deal_id"].nunique() > 0.1 * len(data.deals)
    amount_change = same_stage & ev["amount"].ne(ev["amount"].shift())
    assert amount_change.sum() > len(data.deals)


def test_activity_fades_before_a_loss(generated):
    data, _ = generated
    d = data.deals[data.deals["outcome"].notna()]
    d = d[_days(d["closed_at"] - d["created_at"]) >= 14]
    acts = data.activities.merge(d[["deal_id", "closed_at", "outcome"]], on="deal_id")
    last = acts[acts["occurred_at"] >= acts["closed_at"] - pd.Timedelta(days=14)]
    rate = last.groupby("outcome").size() / d.groupby("outcome").size()
    assert rate["lost"] < 0.5 * rate["won"]


def test_latent_quality_shows_in_early_activity(generated):
    data, truth = generated
    d = data.deals.merge(truth[["deal_id", "latent_quality"]], on="deal_id")
    acts = data.activities.merge(d[["deal_id", "created_at"]], on="deal_id")
    early = acts[acts["occurred_at"] < acts["created_at"] + pd.Timedelta(days=7)].groupby("deal_id").size()
    count = d["deal_id"].map(early).fillna(0)
    assert stats.spearmanr(count, d["latent_quality"]).statistic > 0.1


def test_creation_grows_and_dips_on_weekends(generated):
    data, _ = generated
    created = data.deals["created_at"]
    year2 = (created >= "2024-01-01").sum() / (created < "2024-01-01").sum()
    assert 1.2 < year2 < 1.7
    weekend = created.dt.dayofweek >= 5
    assert weekend.mean() < 0.5 * 2 / 7


def test_censoring_at_data_end(generated):
    data, truth = generated
    end = data.meta.data_end
    assert end == pd.Timestamp("2025-01-01")
    d = data.deals
    is_open = d["outcome"].isna()
    assert is_open.sum() > 100
    assert d.loc[is_open, "closed_at"].isna().all()
    assert (d["closed_at"].dropna() <= end).all() and (d["created_at"] < end).all()
    assert (data.stage_events["entered_at"] <= end).all() and (data.activities["occurred_at"] <= end).all()
    # the truth knows how censored deals end, the tables do not
    assert truth.loc[is_open.to_numpy(), "closed_at_uncensored"].gt(end).all()


def test_truth_is_calibrated_against_uncensored_outcomes(generated):
    _, truth = generated
    won = truth["outcome_uncensored"] == "won"
    bins = pd.qcut(truth["p_win_true"], 5, labels=False)
    gap = (truth["p_win_true"].groupby(bins).mean() - won.groupby(bins).mean()).abs()
    assert gap.max() < 0.03
    assert truth["latent_quality"].std() == pytest.approx(1.0, abs=0.05)


def test_generate_writes_truth_apart_from_the_dataset(tmp_path):
    summary = generate(tmp_path, n_deals=800, seed=2)
    assert summary["deals"] == 800 == summary["won"] + summary["lost"] + summary["open"]
    assert summary["events"] > 800 and summary["activities"] > 800
    assert (tmp_path / "truth" / "truth.parquet").exists()
    params = json.loads((tmp_path / "truth" / "params.json").read_text())
    assert params["n_deals"] == 800 and params["seed"] == 2
    data = read_dataset(tmp_path)
    assert "latent_quality" not in data.deals.columns
    assert not any("truth" in p.name for p in tmp_path.glob("*.parquet"))
    truth = load_truth(tmp_path)
    assert len(truth) == 800 and truth.attrs["params"]["seed"] == 2


def test_cli_generate(tmp_path):
    from serving.cli import app

    result = CliRunner().invoke(app, ["generate", "--deals", "300", "--seed", "5", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert len(read_dataset(tmp_path).deals) == 300


@pytest.mark.parametrize("kwargs, message", [({"n_deals": 0}, "--deals"), ({"n_deals": 10, "months": 0}, "--months"),
                                             ({"n_deals": 10, "start": "not a date"}, "--start")])
def test_bad_options_say_what_to_fix(kwargs, message):
    with pytest.raises(LeadscoreError, match=message):
        generate_data(**kwargs)

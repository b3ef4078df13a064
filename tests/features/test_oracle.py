"""Oracles: exact formulas agree with brute-force simulation of the same process, are
calibrated against realised outcomes, beat the creation-time oracle, and never peek."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from features.errors import NotEnoughData
from features.schema import CanonicalData
from features.synthetic import generate_data, oracle_bookings, oracle_close_probability
from features.synthetic.generator import creation_oracle
from features.synthetic.oracle import spell_posterior
from features.synthetic.params import ADVANCE, REGRESS, GeneratorParams
from features.synthetic.process import absorption_probability, quarter_starts, simulate

AS_OF = pd.Timestamp("2024-01-01")


@pytest.fixture(scope="module")
def generated():
    return generate_data(12_000, seed=21)


def _params() -> GeneratorParams:
    return GeneratorParams(n_deals=1_000, seed=0)


def _truncate(data: CanonicalData, t: pd.Timestamp) -> CanonicalData:
    """The pipeline as it was known at t: later rows removed, later closes reopened."""
    d = data.deals[data.deals["created_at"] <= t].copy()
    late = d["closed_at"] > t
    d.loc[late, "closed_at"] = pd.NaT
    d.loc[late, "outcome"] = np.nan
    ev = data.stage_events[data.stage_events["entered_at"] <= t]
    acts = data.activities[data.activities["occurred_at"] <= t]
    return CanonicalData(deals=d.reset_index(drop=True), meta=data.meta, stage_events=ev.reset_index(drop=True),
                         activities=acts.reset_index(drop=True), accounts=data.accounts)


def _binned_gap(p: np.ndarray, y: np.ndarray, bins: int = 5) -> float:
    b = pd.qcut(p, bins, labels=False, duplicates="drop")
    return float((pd.Series(p).groupby(b).mean() - pd.Series(y).groupby(b).mean()).abs().max())


@pytest.mark.parametrize("stage, regs", [(0, 0), (2, 1), (3, 2)])
def test_absorption_probability_matches_simulation(stage, regs):
    p = _params()
    n = 60_000
    z = np.full(n, 0.3)
    paths = simulate(np.full(n, stage), np.full(n, regs), np.zeros(n), z, np.ones(n), p, np.random.default_rng(1))
    exact = absorption_probability(z[:1], p)[0, stage, regs]
    assert paths.won.mean() == pytest.approx(exact, abs=0.01)


def test_creation_oracle_is_the_quadrature_of_the_true_probability():
    p = _params()
    z_obs = np.array([-2.0, -0.5, 0.0, 1.2])
    q = np.random.default_rng(0).normal(size=200_000)
    mc = [absorption_probability(z + p.sigma_q * q, p)[:, 0, 0].mean() for z in z_obs]
    assert creation_oracle(z_obs, p) == pytest.approx(mc, abs=0.003)


@pytest.mark.parametrize("offset_days", [-4.0, 3.0, 40.0])
def test_spell_posterior_matches_simulation_around_quarter_ends(offset_days):
    """P(won | still open in negotiation at as_of) by brute force, including the quarter
    pull that removes won deals from the open set near a quarter start."""
    p = replace(_params(), quarter_pull_prob=0.9)
    quarter = quarter_starts(p)[6]
    as_of, t0 = quarter + offset_days, quarter - 25.0
    n = 400_000
    z, mult = np.full(n, 0.2), np.full(n, 1.3)
    paths = simulate(np.full(n, 3), np.zeros(n), np.full(n, t0), z, mult, p, np.random.default_rng(2))
    # the observed state: still open, and still in the spell that started at t0
    still_open = (paths.closed > as_of) & (paths.spells.end[:n] > as_of)
    one = np.ones(1)
    post = spell_posterior(z[:1], np.full(1, 3), np.zeros(1, int), mult[:1], t0 * one, as_of, p)[0]
    naive = spell_posterior(z[:1], np.full(1, 3), np.zeros(1, int), mult[:1], t0 * one, as_of, p, with_pull=False)[0]
    w = absorption_probability(z[:1], p)[0]
    exact = post[ADVANCE] + post[REGRESS] * w[2, 1]
    assert paths.won[still_open].mean() == pytest.approx(exact, abs=0.006)
    if offset_days < 20:  # near a quarter start the pull correction matters
        assert abs(naive[ADVANCE] - post[ADVANCE]) > 0.02


def test_creation_oracle_is_calibrated_on_early_deals(generated):
    data, truth = generated
    d = data.deals.merge(truth, on="deal_id")
    early = d[(d["created_at"] < "2024-01-01") & d["outcome"].notna()]
    assert len(early) > 4_000
    assert _binned_gap(early["p_win_creation_oracle"].to_numpy(), (early["outcome"] == "won").to_numpy()) < 0.04


def test_close_probability_is_calibrated_and_beats_creation_oracle(generated):
    data, truth = generated
    o = oracle_close_probability(data, truth, AS_OF).merge(truth, on="deal_id")
    assert len(o) > 400 and o["p_won_oracle"].between(0, 1).all()
    y = (o["outcome_uncensored"] == "won").to_numpy()
    assert _binned_gap(o["p_won_oracle"].to_numpy(), y) < 0.07
    assert roc_auc_score(y, o["p_won_oracle"]) > roc_auc_score(y, o["p_win_creation_oracle"]) + 0.08


def test_close_probability_covers_exactly_the_open_deals(generated):
    data, truth = generated
    o = oracle_close_probability(data, truth, AS_OF)
    d = data.deals
    expected = d.loc[(d["created_at"] <= AS_OF) & ~(d["closed_at"] <= AS_OF), "deal_id"]
    assert sorted(o["deal_id"]) == sorted(expected)


def test_oracles_use_only_the_state_at_the_date(generated):
    data, truth = generated
    cut = _truncate(data, AS_OF)
    full = oracle_close_probability(data, truth, AS_OF)
    pd.testing.assert_frame_equal(full, oracle_close_probability(cut, truth, AS_OF))
    end = AS_OF + pd.DateOffset(months=3)
    a = oracle_bookings(data, truth, AS_OF, end, n_sims=100, seed=3)
    b = oracle_bookings(cut, truth, AS_OF, end, n_sims=100, seed=3)
    assert {k: v for k, v in a.items() if k != "per_deal"} == {k: v for k, v in b.items() if k != "per_deal"}


def test_bookings_shape(generated):
    data, truth = generated
    b = oracle_bookings(data, truth, AS_OF, AS_OF + pd.DateOffset(months=2), n_sims=100)
    assert set(b) >= {"open_pipeline", "new_deals", "total", "p10", "p50", "p90", "per_deal"}
    assert b["total"] == pytest.approx(b["open_pipeline"] + b["new_deals"])
    assert 0 < b["p10"] <= b["p50"] <= b["p90"]
    assert list(b["per_deal"].columns[:2]) == ["deal_id", "expected_amount"]
    assert b["per_deal"]["expected_amount"].sum() == pytest.approx(b["open_pipeline"])
    # simulated win probabilities agree with the closed form, deal by deal on average
    o = oracle_close_probability(data, truth, AS_OF).merge(b["per_deal"], on="deal_id")
    assert o["p_won_simulated"].mean() == pytest.approx(o["p_won_oracle"].mean(), abs=0.01)
    assert np.corrcoef(o["p_won_simulated"], o["p_won_oracle"])[0, 1] > 0.97


def test_bookings_expectation_matches_realised_over_seeds():
    rows = []
    for seed in range(5):
        data, truth = generate_data(5_000, seed=100 + seed)
        for origin in (pd.Timestamp("2023-10-01"), pd.Timestamp("2024-04-01")):
            end = origin + pd.DateOffset(months=3)
            b = oracle_bookings(data, truth, origin, end, n_sims=200, seed=seed)
            d = data.deals
            won = d[(d["outcome"] == "won") & (d["closed_at"] >= origin) & (d["closed_at"] < end)]
            rows.append({"expected": b["total"], "realised": won["amount"].sum(),
                         "inside": b["p10"] <= won["amount"].sum() <= b["p90"]})
    r = pd.DataFrame(rows)
    assert r["realised"].sum() == pytest.approx(r["expected"].sum(), rel=0.06)
    assert r["inside"].mean() >= 0.6


def test_bookings_before_any_deal_come_only_from_new_deals(generated):
    data, truth = generated
    b = oracle_bookings(data, truth, "2023-01-01", "2023-04-01", n_sims=50)
    assert b["open_pipeline"] == 0 and b["per_deal"].empty
    assert b["new_deals"] > 0 and oracle_close_probability(data, truth, "2022-12-01").empty


def test_bookings_refuse_an_empty_period(generated):
    data, truth = generated
    with pytest.raises(NotEnoughData, match="must be after origin"):
        oracle_bookings(data, truth, AS_OF, AS_OF)

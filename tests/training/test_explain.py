"""FactorExplainer: which factors are reasons, and the sentence of each (hand-built
cases: feature, value, contribution -> expected sentence), the same on frames and on the
serving fast path's dict of arrays."""
from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from training.explain import FactorExplainer, _round
from training.facts import MERGED, SHARED

STAGES = ["lead", "qualified", "proposal", "negotiation"]


# --- data with every kind of value the sentences branch on -----------------------------

def _frame(n: int, rng: np.random.Generator, won: bool) -> pd.DataFrame:
    stage_index = rng.integers(0, 4, n).astype(float)
    X = pd.DataFrame({
        "stage": pd.Categorical(np.array(STAGES)[stage_index.astype(int)], categories=STAGES),
        "stage_index": stage_index,
        "furthest_stage_index": stage_index + rng.integers(0, 2, n),
        "days_in_stage": rng.gamma(2.0, 12.0, n),
        "deal_age_days": rng.gamma(3.0, 30.0, n),
        "amount": rng.lognormal(9, 1.5, n),
        "win_rate": rng.uniform(0, 1, n),
        "activities_30d": rng.poisson(4, n).astype(float),
        "calls": rng.poisson(3, n),  # int64: the reference turns it into strings
        "is_partner": rng.random(n) < 0.3,  # bool: strings too
        "owner": pd.Categorical(rng.choice(["ann", "bob", "cy"], n), categories=["ann", "bob", "cy"]),
        "source": pd.Categorical(rng.choice(["web", "partner", None], n), categories=["web", "partner"]),
        "no_reference": np.full(n, np.nan),  # no finite value among won deals: no grid
        "global_win_rate": np.full(n, 0.31),
        "days_to_quarter_end": rng.integers(0, 90, n).astype(float),
        "stage_velocity": rng.gamma(2.0, 0.5, n),
        "stage_mean_dwell_days": rng.gamma(3.0, 5.0, n),
        "account_prior_losses": rng.poisson(0.5, n).astype(float),
        "owner_win_rate": rng.uniform(0.1, 0.5, n),
    })
    if not won:  # values the won deals never had: out of range, missing, infinite, negative
        X.loc[X.index[::7], "stage_index"] = rng.choice([-1.0, 4.0, 9.0, 2.7, np.nan, -0.5], len(X.index[::7]))
        X.loc[X.index[::5], "days_in_stage"] = rng.choice([np.nan, np.inf, -3.0, 0.0, 1e6, 12.0], len(X.index[::5]))
        X.loc[X.index[::6], "amount"] = rng.choice([np.nan, -np.inf, 0.0, 99.5, 123456.789], len(X.index[::6]))
        X.loc[X.index[::4], "win_rate"] = np.nan
        X["no_reference"] = rng.choice([np.nan, 1.5, 7.0, np.inf], n)
        X.loc[X.index[::9], "stage"] = None
        X.loc[X.index[::11], "owner"] = None
    return X


@pytest.fixture(scope="module")
def explainer() -> FactorExplainer:
    rng = np.random.default_rng(1)
    labels = {"win_rate": "win rate of the owner", "amount": "deal amount",
              "owner_win_rate": "owner historical win rate", "account_prior_losses": "account's earlier losses"}
    return FactorExplainer().fit(_frame(400, rng, won=True), lambda c: labels.get(c, c.replace("_", " ")))


def _contributions(X: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    """Random contributions with ties, zeros, NaN and a bias column."""
    c = rng.normal(0, 0.3, (len(X), X.shape[1] + 1))
    c[rng.random(c.shape) < 0.15] = 0.0
    c[::13, 2] = c[::13, 3]  # ties
    c[::17, 4] = np.nan
    c[::19, :] = rng.choice([-0.1, 0.1], (len(c[::19]), c.shape[1]))  # many ties in one row
    return c


def as_arrays(X: pd.DataFrame) -> dict[str, np.ndarray]:
    """The serving fast path's form: float arrays and object arrays of str or None."""
    out = {}
    for c in X.columns:
        if isinstance(X[c].dtype, pd.CategoricalDtype):
            out[c] = np.array([None if pd.isna(v) else str(v) for v in X[c].tolist()], dtype=object)
        else:
            out[c] = X[c].to_numpy()
    return out



# --- the sentence rules, on hand-built cases ---------------------------------------------

@pytest.fixture(scope="module")
def plain_explainer() -> FactorExplainer:
    """Won deals with known distributions: amount 1..100 (uniform), 30 days in proposal each,
    account losses mostly 0, activities 0..9."""
    n = 100
    won = pd.DataFrame({
        "stage": pd.Categorical(["proposal"] * n, categories=STAGES),
        "stage_index": np.full(n, 2.0), "furthest_stage_index": np.full(n, 2.0),
        "days_in_stage": np.linspace(1, 60, n), "stage_velocity": np.linspace(0.1, 2, n),
        "amount": np.arange(1.0, n + 1), "account_prior_losses": np.r_[np.zeros(60), np.ones(40)],
        "activities_7d": np.arange(n) % 10.0, "owner_win_rate": np.full(n, 0.3), "global_win_rate": np.full(n, 0.31),
        "owner_closed_deals": np.arange(n, dtype=float), "amount_change_ratio": np.ones(n),
        "activity_trend": np.ones(n), "expected_close_overdue": np.zeros(n),
        "days_to_expected_close": np.linspace(0, 99, n),
        "owner": pd.Categorical(["ann"] * n, categories=["ann", "bob"]),
    })
    labels = {"amount": "deal amount", "account_prior_losses": "account's earlier losses",
              "activities_7d": "activities in the last 7 days", "owner_win_rate": "owner historical win rate",
              "owner_closed_deals": "owner closed deals", "days_to_expected_close": "days until expected close"}
    return FactorExplainer().fit(won, lambda c: labels.get(c, c.replace("_", " ")))


DEAL = {"stage": "proposal", "stage_index": 2.0, "furthest_stage_index": 3.0, "stage_velocity": 3.24,
        "global_win_rate": 0.31}
SENTENCES = [  # feature, value, contribution, the deal's other values -> sentence (None: no reason)
    ("stage", "proposal", 0.4, DEAL, "the deal is in proposal after reaching negotiation: deals at this stage "
                                     "win more often"),
    ("stage", "proposal", -0.4, {"furthest_stage_index": 2.0}, "the deal is in proposal: deals at this stage "
                                                                 "win less often"),
    ("stage_index", 1.0, 0.2, {}, "the deal is in qualified: deals at this stage win more often"),
    ("days_in_stage", 44.6, -0.3, DEAL, "45 days in proposal, 3.2x the usual time, longer than 73 % of won "
                                        "deals at that stage"),
    ("days_in_stage", 1.2, 0.3, {"stage": "proposal", "stage_velocity": 0.4},
     "1 day in proposal, 40 % of the usual time, shorter than 99 % of won deals at that stage"),
    ("days_in_stage", 5.0, 0.3, {}, "5 days in the current stage"),
    ("stage_velocity", 3.24, -0.1, {}, "3.2x the usual time in this stage"),
    # a current-state export shows the stage, not since when: an unknown entry, never "0 days in"
    ("days_in_stage", None, -0.3, DEAL, "when the deal entered its current stage is not known: the export "
                                        "shows the stage, not since when"),
    ("days_in_stage", None, 0.3, DEAL, None),
    ("stage_velocity", None, -0.1, {}, "when the deal entered its current stage is not known: the export "
                                       "shows the stage, not since when"),
    ("amount", 1234567.891, -0.2, {}, "deal amount: 1,234,568, higher than any of the won deals"),
    ("amount", 50.5, 0.2, {}, "deal amount: 50.50, typical of won deals"),
    ("amount", 0.5, -0.2, {}, "deal amount: 0.50, lower than any of the won deals"),
    ("amount", None, -0.2, {}, "deal amount not recorded: deals without an amount win less often"),
    ("amount", None, 0.2, {}, None),  # a missing value is never a reason to win
    ("amount", float("nan"), 0.2, {}, None),
    ("amount", float("inf"), 0.2, {}, None),
    ("days_to_expected_close", None, -0.1, {}, "no expected close date: deals without one win less often"),
    ("activities_7d", None, -0.1, {}, "no activities recorded: deals without them win less often"),
    ("owner", None, -0.1, {}, "owner not recorded or not seen before: deals without a known owner win less often"),
    ("owner", None, 0.1, {}, None),
    ("owner", "bob", 0.1, {}, "owner is bob: deals like this win more often"),
    ("owner", "ann", -0.1, {}, "owner is ann: deals like this win less often"),
    ("account_prior_losses", 0.0, 0.3, {}, "no earlier losses at this account"),
    ("account_prior_losses", 3.0, -0.3, {}, "account's earlier losses: 3, higher than any of the won deals"),
    ("activities_7d", 0.0, -0.3, {}, "no activity in the last 7 days"),
    ("activities_7d", 9.0, 0.3, {}, "activities in the last 7 days: 9, higher than 90 % of won deals"),
    ("owner_closed_deals", 0.0, -0.1, {}, "owner closed deals: none yet"),
    ("owner_closed_deals", 2034.0, 0.1, {}, "owner closed deals: 2,034 so far"),
    ("owner_win_rate", 0.4213, 0.2, DEAL, "owner historical win rate: 42 %, against 31 % overall"),
    ("owner_win_rate", 0.4213, 0.2, {}, "owner historical win rate: 42 %"),
    ("amount_change_ratio", 1.234, -0.1, {}, "the amount is up 23 % since it was first entered"),
    ("amount_change_ratio", 0.5, -0.1, {}, "the amount is down 50 % since it was first entered"),
    ("amount_change_ratio", 1.0, 0.1, {}, "the amount is unchanged since it was first entered"),
    ("activity_trend", 6.04, 0.1, {}, "recent activity at 6.0x the earlier pace"),
    ("activity_trend", 0.62, -0.1, {}, "recent activity at 62 % of the earlier pace"),
    ("expected_close_overdue", 1.0, -0.1, {}, "the expected close date has passed"),
    ("expected_close_overdue", 0.0, 0.1, {}, "the expected close date is still ahead"),
    ("days_to_expected_close", 12.6, 0.1, {}, "days until expected close: 13, lower than 87 % of won deals"),
]


@pytest.mark.parametrize("feature, value, impact, other, want", SENTENCES)
def test_sentence(plain_explainer, feature, value, impact, other, want):
    assert plain_explainer.sentence(feature, value, impact, other) == want


def _explain_one(ex, values: dict, contributions: dict) -> dict:
    X = pd.DataFrame({c: v if isinstance(v, pd.Categorical) else [v] for c, v in values.items()})
    C = np.array([[contributions.get(c, 0.0) for c in X.columns] + [0.5]])  # + a bias column
    return ex.explain(X, C)[0]


def test_shared_features_are_never_reasons(plain_explainer):
    """The overall win rate is the same for every deal scored at one time: not a fact about the deal."""
    row = _explain_one(plain_explainer, {"global_win_rate": 0.31, "amount": 80.0, "owner_win_rate": 0.2},
                       {"global_win_rate": -2.0, "amount": -0.1, "owner_win_rate": 0.05})
    assert [f["feature"] for f in row["negative"]] == ["amount"]
    assert [f["feature"] for f in row["positive"]] == ["owner_win_rate"]
    assert {"global_win_rate", "days_to_quarter_end", "month_of_quarter"} <= SHARED


def test_one_fact_is_one_factor(plain_explainer):
    """Stage, its position, the furthest stage and the usual dwell are one factor with their summed
    contribution; days in stage and stage velocity another."""
    row = _explain_one(plain_explainer, {"stage": pd.Categorical(["proposal"], categories=STAGES),
                                         "stage_index": 2.0, "furthest_stage_index": 3.0,
                                         "stage_mean_dwell_days": 14.0, "days_in_stage": 44.6,
                                         "stage_velocity": 3.24, "global_win_rate": 0.31},
                       {"stage": 0.1, "stage_index": 0.2, "furthest_stage_index": 0.3, "stage_mean_dwell_days": 0.05,
                        "days_in_stage": -0.25, "stage_velocity": -0.5})
    assert row["positive"] == [{"feature": "stage", "value": "proposal", "impact": 0.65,
                                "sentence": "the deal is in proposal after reaching negotiation: deals at this "
                                            "stage win more often"}]
    assert row["negative"] == [{"feature": "days_in_stage", "value": 44.6, "impact": -0.75,
                                "sentence": "45 days in proposal, 3.2x the usual time, longer than 73 % of won "
                                            "deals at that stage"}]
    assert MERGED["stage_index"] == MERGED["furthest_stage_index"] == "stage"


def test_a_missing_value_gives_its_place_to_the_next_reason(plain_explainer):
    values = {"amount": np.nan, "owner": pd.Categorical([None], categories=["ann", "bob"]),
              "activities_7d": 8.0, "account_prior_losses": 0.0, "days_to_expected_close": 5.0}
    row = _explain_one(plain_explainer, values, {"amount": 0.9, "owner": 0.8, "activities_7d": 0.3,
                                                 "account_prior_losses": 0.2, "days_to_expected_close": 0.1})
    assert [f["feature"] for f in row["positive"]] == ["activities_7d", "account_prior_losses",
                                                       "days_to_expected_close"]
    row = _explain_one(plain_explainer, values, {"amount": -0.9, "owner": 0.8})
    assert row["negative"][0]["sentence"] == "deal amount not recorded: deals without an amount win less often"
    assert row["positive"] == []


@pytest.mark.parametrize("top_k", [3, 1, 0, 50])
def test_explain_is_the_sentence_of_each_chosen_factor(explainer, top_k):
    """Frames and the fast path's dict of arrays give the same factors; each is the top of its
    side by contribution per fact and its sentence is `sentence` of its value."""
    rng = np.random.default_rng(top_k)
    X = _frame(300, rng, won=False)
    C = _contributions(X, rng)
    ex = pickle.loads(pickle.dumps(explainer))
    ex.top_k = top_k
    got = ex.explain(X, C)
    assert ex.explain(as_arrays(X), C) == got
    assert ex.explain(X.iloc[:1], C[:1]) == got[:1]  # one deal, the request-sized case
    assert ex.explain(X.iloc[:0], C[:0]) == []
    records = X.astype(object).where(X.notna(), None).to_dict("records")
    for row, deal in zip(got, records):
        assert len(row["positive"]) <= top_k and len(row["negative"]) <= top_k
        for side, sign in (("positive", 1), ("negative", -1)):
            impacts = [f["impact"] * sign for f in row[side]]
            assert impacts == sorted(impacts, reverse=True) and all(v > 0 for v in impacts)
            for f in row[side]:
                assert f["feature"] not in SHARED and f["feature"] not in MERGED
                assert f["sentence"] == ex.sentence(f["feature"], deal[f["feature"]], f["impact"], deal)


def test_explain_covers_every_kind_of_sentence(explainer):
    rng = np.random.default_rng(5)
    X = _frame(300, rng, won=False)
    sentences = [f["sentence"] for row in explainer.explain(X, _contributions(X, rng))
                 for side in row.values() for f in side]
    for part in ("the deal is in", "after reaching", "days in proposal", "% of won deals at that stage",
                 "the usual time", "deal amount:", "not recorded", "win more often", "win less often",
                 "no earlier losses at this account", "against 31 % overall", "calls: "):
        assert any(part in s for s in sentences), part
    assert not any("overall win rate" in s or "days to quarter end" in s for s in sentences)


def test_explain_on_a_trained_predictor(small_data, small_predictor):
    data, _ = small_data
    X = small_predictor.features(data, data.data_end)[small_predictor.feature_names]
    C = small_predictor.close_model.contributions(X)
    ex = small_predictor.explainer
    got = ex.explain(X, C)
    assert ex.explain(as_arrays(X), C) == got
    factors = [f for row in got for side in row.values() for f in side]
    assert factors and not {f["feature"] for f in factors} & (SHARED | set(MERGED))
    assert not [f for f in factors if f["impact"] > 0 and f["value"] is None]


def test_explaining_leaves_the_explainer_as_fitted(explainer):
    rng = np.random.default_rng(2)
    X = _frame(20, rng, won=False)
    before = set(explainer.__dict__)
    explainer.explain(X, _contributions(X, rng))
    assert set(explainer.__dict__) == before  # no cache: it pickles as it was fitted
    restored = pickle.loads(pickle.dumps(explainer))
    C = _contributions(X, rng)
    assert restored.explain(X, C) == explainer.explain(X, C)


def test_mismatched_inputs_are_refused(explainer):
    rng = np.random.default_rng(3)
    X = _frame(10, rng, won=False)
    with pytest.raises(ValueError, match="do not match"):
        explainer.explain(X, _contributions(X, rng)[:5])
    with pytest.raises(ValueError, match="do not match"):
        explainer.explain(X, np.zeros((10, 3)))
    arrays = as_arrays(X)
    arrays["amount"] = arrays["amount"][:4]
    with pytest.raises(ValueError, match="unequal lengths"):
        explainer.explain(arrays, _contributions(X, rng))


def test_round_equals_python_round():
    rng = np.random.default_rng(0)
    halves = (np.arange(-2000, 2000) + 0.5) / 1e4  # ties in decimal, near-ties in binary
    x = np.concatenate([rng.normal(0, 1, 20000), rng.normal(0, 1e-4, 2000), halves, np.nextafter(halves, 1),
                        np.nextafter(halves, -1), [0.0, -0.0, 1e13, -1e15, 2.675, 0.00005, np.inf, -np.inf, np.nan]])
    got = _round(x, 4)
    want = [round(float(v), 4) for v in x]
    np.testing.assert_array_equal(np.array(got), np.array(want))
    assert all(type(v) is float for v in got)


def test_sentences_written_once_per_value_are_each_values_own(plain_explainer):
    """A request's reasons reuse the sentence of a number (or a group's rate) already written for
    another deal; each is still the sentence of its own value, -0.0 and 0.0 included."""
    amounts = [50.5, 50.5, -0.0, 0.0, 0.0, -0.0, 7.0, 7.0]
    rates = [0.4213, 0.4213, 0.0, -0.0, 0.2, 0.2, 0.4213, 0.0]
    X = pd.DataFrame({"amount": amounts, "owner_win_rate": rates, "global_win_rate": 0.31})
    C = np.column_stack([np.full(len(X), -0.5), np.full(len(X), 0.3), np.zeros(len(X)), np.zeros(len(X))])
    got = plain_explainer.explain(X, C)
    for row, amount, rate in zip(got, amounts, rates):
        deal = {"amount": amount, "owner_win_rate": rate, "global_win_rate": 0.31}
        assert row["negative"][0]["sentence"] == plain_explainer.sentence("amount", amount, -0.5, deal)
        assert row["positive"][0]["sentence"] == plain_explainer.sentence("owner_win_rate", rate, 0.3, deal)
    assert got[2]["negative"][0]["sentence"] != got[3]["negative"][0]["sentence"]  # "-0" is not "0"


def test_a_sentence_written_once_per_value_and_sign_is_each_deals_own(plain_explainer):
    """`_describe` writes a sentence that depends on the value and the sign only once per request;
    one that reads other features of the deal (days in stage: its stage and usual time) is each
    deal's own even when the value repeats."""
    n = 6
    X = pd.DataFrame({"owner": ["bob", "bob", "ann", "bob", "ann", "bob"], "days_in_stage": np.full(n, 10.0),
                      "stage_velocity": [0.4, 3.2, 0.4, 1.0, np.nan, 3.2], "stage": ["proposal"] * n,
                      "global_win_rate": 0.31})
    sign = np.array([1.0, -1.0, 1.0, 1.0, -1.0, -1.0])
    C = np.column_stack([0.5 * sign, -0.4 * sign, np.zeros(n), np.zeros(n), np.zeros(n)])
    got = plain_explainer.explain(X, C)
    for row, deal in zip(got, X.astype(object).where(X.notna(), None).to_dict("records")):
        for f in row["positive"] + row["negative"]:
            assert f["sentence"] == plain_explainer.sentence(f["feature"], deal[f["feature"]], f["impact"], deal)
    said = {f["sentence"] for row in got for f in row["positive"] + row["negative"] if f["feature"] == "days_in_stage"}
    assert len(said) == 4  # 0.4x, 3.2x and 1.0x the usual time, and none when it is unknown

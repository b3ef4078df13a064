"""FactorExplainer: the fast `explain` gives exactly what the first (row by row) version
gave, kept here as the reference, for frames and for the serving fast path's dict of arrays."""
from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from training.explain import FactorExplainer, _round

STAGES = ["lead", "qualified", "proposal", "negotiation"]


# --- the reference: the row-by-row implementation the fast one replaced, verbatim ----------

def _ref_fmt(value, whole=False):
    if isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return "unknown"
        if whole or abs(value) >= 100 or float(value).is_integer():
            return f"{value:,.0f}"
        return f"{value:.2f}"
    return str(value)


def _ref_whole(feature):
    return "days" in feature or feature.startswith(("activities_", "stage_changes", "close_date_pushes"))


def _ref_percentile(grid, value):
    return int(round(100 * np.searchsorted(grid, value, side="right") / len(grid)))


def _ref_sentence(ex, feature, value, stage, impact=0.0):
    positions = {"stage_index": "is in {stage}", "furthest_stage_index": "has reached {stage}"}
    label = ex.labels_.get(feature, feature.replace("_", " "))
    known = isinstance(value, (int, float, np.number)) and np.isfinite(value)
    if feature in positions and known and 0 <= int(value) < len(ex.stages_):
        return f"the deal {positions[feature].format(stage=ex.stages_[int(value)])}"
    if feature == ex.days_in_stage_column and stage in ex.stage_grids_ and known:
        pct = _ref_percentile(ex.stage_grids_[stage], value)
        return (f"{_ref_fmt(value, True)} days in {stage}, longer than {pct} % of won deals at that stage"
                if pct >= 50 else f"{_ref_fmt(value, True)} days in {stage}, quicker than {100 - pct} % of won deals")
    if feature in ex.grids_ and known:
        pct = _ref_percentile(ex.grids_[feature], float(value))
        side = f"higher than {pct} % of won deals" if pct >= 50 else f"lower than {100 - pct} % of won deals"
        return f"{label}: {_ref_fmt(value, _ref_whole(feature))}, {side}"
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return f"{label}: not recorded"
    trend = "deals like this win more often" if impact > 0 else "deals like this win less often"
    return f"{label} is {value}: {trend}"


def _ref_factor(ex, feature, value, impact, stage):
    if isinstance(value, (np.floating, float)):
        value = None if np.isnan(value) else float(value)
    elif isinstance(value, np.integer):
        value = int(value)
    elif value is pd.NA:
        value = None
    else:
        value = str(value) if value is not None else None
    stage = None if stage is pd.NA or stage is None else str(stage)
    return {"feature": feature, "value": value, "impact": round(float(impact), 4),
            "sentence": _ref_sentence(ex, feature, np.nan if value is None else value, stage, impact)}


def _ref_age_rule(ex, X, contrib):
    """Row by row: a positive contribution of an age beyond every won deal's is dropped."""
    contrib = contrib.copy()
    for j, feature in enumerate(X.columns):
        if feature not in ("deal_age_days", "days_in_stage") or feature not in ex.grids_:
            continue
        for i in range(len(X)):
            stage = X[ex.stage_column].iloc[i] if ex.stage_column in X else None
            grid = ex.stage_grids_.get(str(stage), ex.grids_[feature]) if feature == "days_in_stage" \
                else ex.grids_[feature]
            if X[feature].iloc[i] > grid[-1] and contrib[i, j] > 0:
                contrib[i, j] = 0.0
    return contrib


def reference_explain(ex, X, contributions):
    contrib = _ref_age_rule(ex, X, contributions[:, : X.shape[1]])
    k = min(ex.top_k, X.shape[1])
    order = np.argsort(contrib, axis=1)
    cols = list(X.columns)
    stages = X[ex.stage_column].astype("string").to_numpy() if ex.stage_column in X else [None] * len(X)
    values = X.to_numpy(dtype=object)
    out = []
    for i in range(len(X)):
        row = values[i]
        pos = [j for j in order[i, ::-1][:k] if contrib[i, j] > 0]
        neg = [j for j in order[i, :k] if contrib[i, j] < 0]
        out.append({side: [_ref_factor(ex, cols[j], row[j], contrib[i, j], stages[i]) for j in idx]
                    for side, idx in (("positive", pos), ("negative", neg))})
    return out


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
    labels = {"win_rate": "win rate of the owner", "amount": "deal amount"}
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


@pytest.mark.parametrize("top_k", [3, 1, 0, 50])
def test_explain_equals_the_row_by_row_reference(explainer, top_k):
    rng = np.random.default_rng(top_k)
    X = _frame(300, rng, won=False)
    C = _contributions(X, rng)
    ex = pickle.loads(pickle.dumps(explainer))
    ex.top_k = top_k
    want = reference_explain(ex, X, C)
    assert ex.explain(X, C) == want
    assert ex.explain(as_arrays(X), C) == want
    assert ex.explain(X.iloc[:1], C[:1]) == want[:1]  # one deal, the request-sized case
    assert ex.explain(X.iloc[:0], C[:0]) == []


def test_explain_covers_every_kind_of_sentence(explainer):
    rng = np.random.default_rng(5)
    X = _frame(300, rng, won=False)
    sentences = [f["sentence"] for row in explainer.explain(X, _contributions(X, rng))
                 for side in row.values() for f in side]
    for part in ("the deal is in", "the deal has reached", "days in proposal", "% of won deals at that stage",
                 "deal amount:", "not recorded", "win more often", "win less often", "is inf:", "calls is "):
        assert any(part in s for s in sentences), part


def test_explain_on_a_trained_predictor_equals_the_reference(small_data, small_predictor):
    data, _ = small_data
    X = small_predictor.features(data, data.data_end)[small_predictor.feature_names]
    C = small_predictor.close_model.contributions(X)
    want = reference_explain(small_predictor.explainer, X, C)
    assert small_predictor.explainer.explain(X, C) == want
    assert small_predictor.explainer.explain(as_arrays(X), C) == want


def test_explaining_leaves_the_explainer_as_fitted(explainer):
    rng = np.random.default_rng(2)
    X = _frame(20, rng, won=False)
    before = set(explainer.__dict__)
    explainer.explain(X, _contributions(X, rng))
    assert set(explainer.__dict__) == before  # no cache: it pickles as it was fitted
    restored = pickle.loads(pickle.dumps(explainer))
    C = _contributions(X, rng)
    assert restored.explain(X, C) == explainer.explain(X, C)


def test_sentence_is_unchanged(explainer):
    for feature, value, stage in [("days_in_stage", 30.0, "proposal"), ("amount", 5000.0, None),
                                  ("stage_index", 2.0, None), ("source", "web", None), ("win_rate", np.nan, None)]:
        assert explainer.sentence(feature, value, stage, 0.5) == _ref_sentence(explainer, feature, value, stage, 0.5)


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

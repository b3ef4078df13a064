"""Path attribution: an exact decomposition of the raw score, equal to a plain walk of the
dumped trees, cached on the close model but never pickled with it."""
from __future__ import annotations

import math
import pickle

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

from training.attribution import PathAttribution
from training.lightgbm_fast import lgb_matrix
from training.models import CloseProbabilityModel


def _frame(n: int, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    X = pd.DataFrame({
        "x": rng.normal(size=n),
        "gappy": np.where(rng.random(n) < 0.25, np.nan, rng.normal(size=n)),  # NaNs: learned directions
        "region": pd.Categorical(rng.choice(["n", "s", "e", "w", "c"], n), categories=["n", "s", "e", "w", "c"]),
        "noise": rng.uniform(size=n),
    })
    logit = X["x"] + np.nan_to_num(X["gappy"].to_numpy(), nan=-1.0) + X["region"].isin(["n", "e"]) - 0.7
    return X, (rng.random(n) < 1 / (1 + np.exp(-logit))).to_numpy().astype(float)


@pytest.fixture(scope="module")
def data():
    return _frame(1500, np.random.default_rng(0))


@pytest.fixture(scope="module")
def booster(data) -> lgb.Booster:
    X, y = data
    params = {"objective": "binary", "num_leaves": 8, "min_data_in_leaf": 20, "min_data_per_group": 20,
              "cat_smooth": 5, "learning_rate": 0.2, "verbosity": -1, "num_threads": 1, "seed": 0}
    return lgb.train(params, lgb.Dataset(X, y), num_boost_round=25)


@pytest.fixture(scope="module")
def close_model(data) -> CloseProbabilityModel:
    X, y = data
    Xv, yv = _frame(600, np.random.default_rng(1))
    Xc, yc = _frame(600, np.random.default_rng(2))
    model = CloseProbabilityModel(n_estimators=40, learning_rate=0.2, min_child_samples=20, early_stopping_rounds=10,
                                  min_signal_z=0.0, n_jobs=1)
    return model.fit(X, y, Xv, yv, Xc, yc)


# --- the brute-force oracle: walk each dumped tree for one row ----------------------------

def _goes_left(node: dict, x: float) -> bool:
    """LightGBM's decision at a split, read from the dump (numerical: threshold, missing
    type and default direction; categorical: the categories listed in the threshold)."""
    if node["decision_type"] == "==":
        if math.isnan(x) or x < 0:
            return False
        return int(x) in {int(c) for c in str(node["threshold"]).split("||")}
    missing = node["missing_type"]
    if math.isnan(x) and missing != "NaN":
        x = 0.0
    if (missing == "Zero" and abs(x) <= 1e-35) or (missing == "NaN" and math.isnan(x)):
        return node["default_left"]
    return x <= node["threshold"]


def _mean(node: dict) -> tuple[float, float]:
    """(expected value, count) of a subtree: its leaves' values weighted by counts."""
    if "split_feature" not in node:
        return node["leaf_value"], node["leaf_count"]
    (lv, lc), (rv, rc) = _mean(node["left_child"]), _mean(node["right_child"])
    return (lv * lc + rv * rc) / (lc + rc), lc + rc


def walk(dump: dict, row: np.ndarray) -> np.ndarray:
    out = np.zeros(len(row) + 1)
    for tree in dump["tree_info"]:
        node = tree["tree_structure"]
        out[-1] += _mean(node)[0]
        while "split_feature" in node:
            child = node["left_child"] if _goes_left(node, row[node["split_feature"]]) else node["right_child"]
            out[node["split_feature"]] += _mean(child)[0] - _mean(node)[0]
            node = child
    return out


# --- tests -------------------------------------------------------------------------------

def test_rows_sum_to_the_raw_score_init_score_included(booster, data):
    X, _ = data
    M = lgb_matrix(X, booster.pandas_categorical)
    for num_iteration in (None, 1, 7):
        attribution = PathAttribution().fit(booster, num_iteration)
        contrib = attribution.contributions(M)
        assert contrib.shape == (len(X), X.shape[1] + 1)
        raw = booster.predict(M, raw_score=True, num_iteration=num_iteration)
        np.testing.assert_allclose(contrib.sum(axis=1), raw, rtol=0, atol=1e-10)
    # the first tree carries boost_from_average: the bias is far from zero for a 30 % base rate
    assert abs(contrib[0, -1]) > 0.1


def test_equals_a_walk_of_the_dumped_trees(booster, data):
    X, _ = data
    M = lgb_matrix(X, booster.pandas_categorical)
    rows = np.r_[np.flatnonzero(np.isnan(M[:, 1]))[:5], np.arange(5)]  # missing values among them
    dump = booster.dump_model()
    want = np.array([walk(dump, M[i]) for i in rows])
    np.testing.assert_allclose(want.sum(axis=1), booster.predict(M[rows], raw_score=True), atol=1e-10)  # the oracle
    np.testing.assert_allclose(PathAttribution().fit(booster).contributions(M[rows]), want, rtol=0, atol=1e-12)


def test_frame_and_matrix_and_one_row_agree(booster, data):
    X, _ = data
    attribution = PathAttribution().fit(booster)
    M = lgb_matrix(X, booster.pandas_categorical)
    np.testing.assert_array_equal(attribution.contributions(X), attribution.contributions(M))
    np.testing.assert_allclose(attribution.contributions(M[3:4]), attribution.contributions(M)[3:4], atol=1e-12)
    assert attribution.contributions(M[:0]).shape == (0, X.shape[1] + 1)
    with pytest.raises(ValueError, match="num_iteration=25"):
        attribution.from_leaves(booster.predict(M[:3], pred_leaf=True, num_iteration=5))


def test_sparse_and_dense_tables_agree(booster, data, monkeypatch):
    X, _ = data
    dense = PathAttribution().fit(booster)
    monkeypatch.setattr("training.attribution.DENSE_BYTES", 0)
    sparse = PathAttribution().fit(booster)
    assert dense.dense_leaf_matrix_ is not None and sparse.dense_leaf_matrix_ is None
    np.testing.assert_allclose(sparse.contributions(X), dense.contributions(X), rtol=0, atol=1e-12)


def test_bias_equals_the_shap_bias_and_both_add_up(booster, data):
    X, _ = data
    path = PathAttribution().fit(booster).contributions(X)
    shap = booster.predict(X, pred_contrib=True)
    np.testing.assert_allclose(path[:, -1], shap[:, -1], atol=1e-10)  # both: count-weighted expected value
    np.testing.assert_allclose(path.sum(axis=1), shap.sum(axis=1), atol=1e-9)


class _Dumped:
    """A stand-in booster with a hand-made dump: a one-leaf tree and a feature split twice."""

    def __init__(self, dump: dict):
        self.dump = dump

    def dump_model(self, num_iteration=None):
        return self.dump

    def predict(self, X, pred_leaf, num_iteration, num_threads=None):
        return np.asarray(X, dtype=np.int32)  # the test passes leaf indexes as rows


def test_one_leaf_trees_and_repeated_features():
    leaf = lambda i, v, n: {"leaf_index": i, "leaf_value": v, "leaf_count": n}  # noqa: E731
    split = lambda f, left, right: {"split_feature": f, "left_child": left, "right_child": right}  # noqa: E731
    deep = split(0, split(0, leaf(0, 1.0, 1), leaf(1, 3.0, 3)), leaf(2, -2.0, 4))  # feature 0 twice
    dump = {"num_tree_per_iteration": 1, "max_feature_idx": 1, "feature_names": ["a", "b"],
            "tree_info": [{"tree_structure": {"leaf_value": 0.5}}, {"tree_structure": deep}]}
    attribution = PathAttribution().fit(_Dumped(dump))
    contrib = attribution.contributions(np.array([[0, 0], [0, 1], [0, 2]]))
    # expected values: root (1 + 9 - 8) / 8 = 0.25, left (1 + 9) / 4 = 2.5; bias 0.5 + 0.25
    np.testing.assert_allclose(contrib, [[1.0 - 0.25, 0, 0.75], [3.0 - 0.25, 0, 0.75], [-2.25, 0, 0.75]])
    np.testing.assert_allclose(contrib.sum(axis=1), [1.5, 3.5, -1.5])


def test_refuses_multiclass_linear_and_unfitted():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2))
    multi = lgb.train({"objective": "multiclass", "num_class": 3, "verbosity": -1, "num_threads": 1},
                      lgb.Dataset(X, rng.integers(0, 3, 300)), num_boost_round=2)
    with pytest.raises(ValueError, match="single-output"):
        PathAttribution().fit(multi)
    linear = lgb.train({"objective": "regression", "linear_tree": True, "verbosity": -1, "num_threads": 1},
                       lgb.Dataset(X, X[:, 0] * 2 + rng.normal(size=300)), num_boost_round=2)
    with pytest.raises(ValueError, match="linear trees"):
        PathAttribution().fit(linear)
    with pytest.raises(NotFittedError, match="not fitted"):
        PathAttribution().contributions(X)


def test_close_model_methods(close_model, data):
    X, _ = data
    assert not close_model.fallback_
    M = lgb_matrix(X, close_model.booster_.pandas_categorical)
    booster, it = close_model.booster_, close_model.best_iteration_
    np.testing.assert_array_equal(close_model.contributions(M, method="shap"),
                                  booster.predict(M, pred_contrib=True, num_iteration=it))
    path = close_model.contributions(X)  # the default
    np.testing.assert_allclose(path, PathAttribution().fit(booster, it).contributions(M), atol=1e-12)
    np.testing.assert_allclose(path.sum(axis=1), close_model.predict_raw(M), atol=1e-10)
    assert close_model.contributions(X.iloc[:0]).shape == (0, X.shape[1] + 1)
    with pytest.raises(ValueError, match=r"'path', 'shap'"):
        close_model.contributions(M, method="treeshap")


def test_a_given_attribution_table_gives_the_same_contributions(close_model, data):
    X, _ = data
    before = set(close_model.__dict__)
    table = close_model.path_attribution()
    np.testing.assert_array_equal(close_model.contributions(X.iloc[:50], attribution=table),
                                  close_model.contributions(X.iloc[:50]))
    assert set(close_model.__dict__) == before  # no cache: the model pickles as it was fitted
    restored = pickle.loads(pickle.dumps(close_model))
    np.testing.assert_array_equal(restored.contributions(X.iloc[:50]), close_model.contributions(X.iloc[:50]))


def test_one_walk_gives_predict_bitwise_and_the_same_contributions():
    """`predict_proba_and_contributions` sums the leaves as LightGBM does: bitwise the same scores."""
    import models_cache

    from training.lightgbm_fast import shared_matrix

    predictor = models_cache.small_predictor()
    data, _ = models_cache.small_data()
    feats = predictor.features(data, data.data_end)
    X = feats[predictor.feature_names]
    M = shared_matrix(X, predictor.close_model, predictor.time_model)
    model = predictor.close_model
    table = model.path_attribution()
    for rows in (M, M[:3], *(M[i:i + 1] for i in range(40))):  # single rows too: no pairwise summing
        p, contrib = model.predict_proba_and_contributions(rows, attribution=table)
        np.testing.assert_array_equal(p, model.predict_proba(rows))
        np.testing.assert_array_equal(contrib, model.contributions(rows, attribution=table))
    raw = table.raw_from_leaves(model.booster_.predict(M, pred_leaf=True, num_iteration=model.best_iteration_))
    np.testing.assert_array_equal(raw, model.predict_raw(M))


def test_a_few_rows_sum_the_dense_table_as_the_sparse_product_does(booster, data, monkeypatch):
    """Up to FEW_ROWS rows the leaves' rows are summed directly: bitwise the product's sums."""
    from training.attribution import FEW_ROWS

    X, _ = data
    attribution = PathAttribution().fit(booster)
    M = lgb_matrix(X, booster.pandas_categorical)
    for rows in (M[:1], M[7:9], M[100:100 + FEW_ROWS]):
        leaves = booster.predict(rows, pred_leaf=True)
        few = attribution.from_leaves(leaves)
        with monkeypatch.context() as patch:
            patch.setattr("training.attribution.FEW_ROWS", 0)
            product = attribution.from_leaves(leaves)
        assert few.shape == product.shape == (len(rows), X.shape[1] + 1)
        np.testing.assert_array_equal(few.view("int64"), product.view("int64"))  # the same bits, signed zeros too

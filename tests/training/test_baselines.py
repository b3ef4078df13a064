"""Baselines: beat a constant predictor with signal, stay near the base rate on noise,
and never raise on unseen levels or missing values."""
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from training.baselines import LogisticBaseline, NaiveBayesBaseline, StageRateBaseline
from training.evaluate import brier_skill, roc_auc

STAGES = np.array(["lead", "qualified", "proposal", "negotiation"])


def make_frame(n: int, seed: int, signal: bool) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    stage_idx = rng.integers(0, 4, n)
    segment = rng.choice(["smb", "mid", "ent"], n)
    amount = rng.lognormal(9, 1.5, n)
    days = rng.integers(0, 200, n).astype(float)
    if signal:
        logit = -1.5 + 0.9 * stage_idx + (segment == "smb") * 0.7 - 0.01 * days
    else:
        logit = np.full(n, -0.8)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame({
        "stage": pd.Series(STAGES[stage_idx], dtype="string"),
        "segment": pd.Series(segment, dtype="string"),
        "amount": amount, "days_in_stage": days,
        "n_activities": pd.array(rng.integers(0, 5, n), dtype="Int64"),
    })
    return frame, y


BASELINES = [StageRateBaseline(), NaiveBayesBaseline(), LogisticBaseline()]
IDS = ["stage_rate", "naive_bayes", "logistic"]


@pytest.fixture(scope="module")
def signal_data():
    return make_frame(4000, 0, True), make_frame(4000, 1, True)


@pytest.fixture(scope="module")
def noise_data():
    return make_frame(4000, 2, False), make_frame(4000, 3, False)


@pytest.mark.parametrize("model", BASELINES, ids=IDS)
def test_beats_constant_with_signal(model, signal_data):
    (X, y), (X_test, y_test) = signal_data
    p = clone(model).fit(X, y).predict_proba(X_test)
    assert p.shape == (len(X_test),)
    assert ((p > 0) & (p < 1)).all()
    assert brier_skill(y_test, p, y.mean()) > 0.03
    assert roc_auc(y_test, p) > 0.6


@pytest.mark.parametrize("model", BASELINES, ids=IDS)
def test_near_base_rate_on_noise(model, noise_data):
    (X, y), (X_test, y_test) = noise_data
    p = clone(model).fit(X, y).predict_proba(X_test)
    assert brier_skill(y_test, p, y.mean()) >= -0.01


@pytest.mark.parametrize("model", BASELINES, ids=IDS)
def test_unseen_levels_and_missing_values(model, signal_data):
    (X, y), _ = signal_data
    X = X.copy()
    X.loc[:50, "segment"] = pd.NA
    X.loc[:50, "amount"] = np.nan
    X.loc[:50, "n_activities"] = pd.NA
    fitted = clone(model).fit(X, y)
    odd = pd.DataFrame({
        "stage": pd.Series(["closing-soon", None, "proposal"], dtype="string"),
        "segment": pd.Series(["public-sector", None, "smb"], dtype="string"),
        "amount": [np.nan, 1e12, 5.0], "days_in_stage": [np.nan, 3.0, 4.0],
        "n_activities": pd.array([pd.NA, 1, 2], dtype="Int64"),
    })
    p = fitted.predict_proba(odd)
    assert p.shape == (3,) and np.isfinite(p).all() and ((p > 0) & (p < 1)).all()


def test_stage_rate_by_hand():
    X = pd.DataFrame({"stage": ["a", "a", "a", "b", None, None]})
    y = np.array([1, 1, 0, 0, 1, 0])
    model = StageRateBaseline(smoothing=0.0).fit(X, y)
    p = model.predict_proba(pd.DataFrame({"stage": ["a", "b", "zzz", None]}))
    np.testing.assert_allclose(p, [2 / 3, 0.0, 0.5, 0.5])
    smoothed = StageRateBaseline(smoothing=2.0).fit(X, y).predict_proba(pd.DataFrame({"stage": ["b"]}))
    assert smoothed[0] == pytest.approx((0 + 2 * 0.5) / (1 + 2))


def test_naive_bayes_by_hand():
    # one field, alpha=1, k = 2 seen levels + 1 unseen slot
    X = pd.DataFrame({"stage": ["a", "a", "b", "b"]})
    y = np.array([1, 1, 1, 0])
    model = NaiveBayesBaseline(alpha=1.0).fit(X, y)
    prior = np.log((3 + 1) / (1 + 1))
    ratio_a = np.log(((2 + 1) / (3 + 3)) / ((0 + 1) / (1 + 3)))
    p = model.predict_proba(pd.DataFrame({"stage": ["a", "unseen"]}))
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-np.array([prior + ratio_a, prior]))))


def test_naive_bayes_bins_named_numeric_columns(signal_data):
    (X, y), (X_test, y_test) = signal_data
    model = NaiveBayesBaseline(columns=["stage", "days_in_stage"]).fit(X, y)
    assert "days_in_stage" in model.bin_edges_
    assert roc_auc(y_test, model.predict_proba(X_test)) > 0.6


def test_logistic_logs_heavy_tailed_numerics(signal_data):
    (X, y), _ = signal_data
    model = LogisticBaseline().fit(X, y)
    assert model.log_columns_ == ["amount"]
    assert model.categorical_ == ["stage", "segment"]


def test_single_class_training_gives_constant():
    X, _ = make_frame(50, 4, False)
    for model in BASELINES:
        p = clone(model).fit(X, np.ones(len(X))).predict_proba(X)
        assert np.all(p > 0.5)


def test_errors_are_readable():
    X, y = make_frame(20, 5, False)
    with pytest.raises(NotFittedError):
        StageRateBaseline().predict_proba(X)
    with pytest.raises(ValueError, match="stage_column"):
        StageRateBaseline(stage_column="pipeline_stage").fit(X, y)
    with pytest.raises(ValueError, match="censored"):
        LogisticBaseline().fit(X, np.full(len(X), np.nan))

"""Metrics against hand-computed values and scikit-learn where they overlap."""
import json
import math

import numpy as np
import pytest
from sklearn import metrics as skm

from training import evaluate as ev


@pytest.fixture(scope="module")
def scored():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 0.99, 2000)
    y = (rng.uniform(size=p.size) < p).astype(int)
    return y, p


def test_matches_scikit_learn(scored):
    y, p = scored
    assert ev.roc_auc(y, p) == pytest.approx(skm.roc_auc_score(y, p))
    assert ev.pr_auc(y, p) == pytest.approx(skm.average_precision_score(y, p))
    assert ev.brier(y, p) == pytest.approx(skm.brier_score_loss(y, p))
    assert ev.log_loss(y, p) == pytest.approx(skm.log_loss(y, p))
    assert ev.mae(y * 10.0, p * 10) == pytest.approx(skm.mean_absolute_error(y * 10.0, p * 10))
    for alpha in (0.1, 0.5, 0.9):
        assert ev.pinball_loss(y * 30.0, p * 30, alpha) == pytest.approx(
            skm.mean_pinball_loss(y * 30.0, p * 30, alpha=alpha))


@pytest.mark.parametrize("y, p, expected", [
    ([0, 1, 1, 0], [0.1, 0.9, 0.6, 0.4], 1.0),
    ([0, 1, 1, 0], [0.8, 0.2, 0.6, 0.4], 0.25),
    ([0, 1], [0.5, 0.5], 0.5),
])
def test_roc_auc_by_hand(y, p, expected):
    assert ev.roc_auc(y, p) == pytest.approx(expected)


def test_brier_and_skill_by_hand():
    y = np.array([1, 0, 0, 0])
    p = np.array([0.5, 0.5, 0.0, 0.0])
    assert ev.brier(y, p) == pytest.approx((0.25 + 0.25) / 4)
    # constant 0.25: (0.5625 + 3 * 0.0625) / 4 = 0.1875
    assert ev.brier_skill(y, p, base_rate=0.25) == pytest.approx(1 - 0.125 / 0.1875)
    assert ev.brier_skill(y, np.full(4, 0.25), base_rate=0.25) == pytest.approx(0.0)
    # the base rate comes from training data, so a different one changes the reference
    assert ev.brier_skill(y, p, base_rate=0.5) == pytest.approx(1 - 0.125 / 0.25)


def test_log_loss_is_clipped():
    assert math.isfinite(ev.log_loss([1, 0], [0.0, 1.0]))
    assert ev.log_loss([1, 0], [0.0, 1.0]) == pytest.approx(-math.log(ev.LOG_LOSS_EPS), rel=1e-4)


def test_expected_calibration_error_by_hand():
    # bin [0.1, 0.2): p mean 0.15, rate 0.5 -> gap 0.35, weight 2/5
    # bin [0.8, 0.9): p mean 0.8, rate 2/3 -> gap 0.1333, weight 3/5
    y = [0, 1, 1, 1, 0]
    p = [0.1, 0.2 - 1e-9, 0.8, 0.8, 0.8]
    expected = 2 / 5 * abs(0.5 - (0.1 + 0.2 - 1e-9) / 2) + 3 / 5 * abs(2 / 3 - 0.8)
    assert ev.expected_calibration_error(y, p) == pytest.approx(expected)
    assert ev.expected_calibration_error([1, 0], [1.0, 0.0]) == pytest.approx(0.0)


def test_reliability_table_has_every_bin():
    table = ev.reliability_table([0, 1, 1], [0.05, 0.95, 1.0], n_bins=10)
    assert len(table) == 10
    assert table["count"].tolist() == [1] + [0] * 8 + [2]
    assert table.loc[9, "observed_rate"] == 1.0
    assert table.loc[9, "mean_predicted"] == pytest.approx(0.975)


def test_lift_top_decile():
    y = np.zeros(100)
    y[:5] = 1  # 5 % positives, all ranked on top
    p = np.linspace(1, 0, 100)
    assert ev.lift_top_decile(y, p) == pytest.approx((5 / 10) / 0.05)
    # ties at the cut-off share the slots: a constant predictor has lift 1, whatever the order
    assert ev.lift_top_decile(y, np.full(100, 0.3)) == pytest.approx(1.0)


def test_interval_coverage():
    assert ev.interval_coverage([1, 5, 10, 20], [0, 5, 11, 0], [2, 6, 12, 19]) == pytest.approx(0.5)


def _brute_concordance(t, e, p):
    num = den = 0.0
    for i in range(len(t)):
        for j in range(len(t)):
            if e[i] and t[i] < t[j]:
                den += 1
                num += 1.0 if p[i] < p[j] else 0.5 if p[i] == p[j] else 0.0
    return num / den


def test_concordance_by_hand():
    # comparable pairs: (0,1) (0,2) (1,2); censored row 3 (t=2) pairs only with row 0 (t=1)
    t = [1, 3, 5, 2]
    e = [1, 1, 0, 0]
    assert ev.concordance_index(t, e, [1, 2, 3, 4]) == pytest.approx(1.0)
    assert ev.concordance_index(t, e, [4, 3, 2, 1]) == pytest.approx(0.0)
    assert ev.concordance_index(t, e, [1, 1, 1, 1]) == pytest.approx(0.5)
    # pair (0,1) discordant, the other three concordant
    assert ev.concordance_index(t, e, [3, 2, 4, 5]) == pytest.approx(3 / 4)
    assert math.isnan(ev.concordance_index([1, 2], [0, 0], [1, 2]))  # nothing observed


def test_concordance_matches_brute_force_with_ties():
    rng = np.random.default_rng(1)
    for _ in range(50):
        n = int(rng.integers(2, 40))
        t = rng.integers(0, 8, n).astype(float)
        e = rng.integers(0, 2, n)
        p = rng.integers(0, 5, n).astype(float)
        if not any(e[i] and t[i] < t[j] for i in range(n) for j in range(n)):
            continue
        assert ev.concordance_index(t, e, p) == pytest.approx(_brute_concordance(t, e, p))


def test_concordance_handles_100k_rows():
    rng = np.random.default_rng(2)
    t = rng.exponential(40, 100_000)
    p = t + rng.normal(0, 20, t.size)
    c = ev.concordance_index(t, rng.integers(0, 2, t.size), p)
    assert 0.75 < c < 0.95


def test_classification_report_json_safe_with_groups(scored):
    y, p = scored
    stage = np.where(np.arange(y.size) % 2, "proposal", "qualified").astype(object)
    stage[:3] = None
    segment = np.where(np.arange(y.size) < 10, "tiny", "big")
    y = y.copy()
    y[:10] = 1  # the "tiny" segment has one class: AUC undefined
    report = ev.classification_report(y, p, base_rate=0.5, groups={"stage": stage, "segment": segment})
    assert set(report) >= {"auc", "pr_auc", "brier", "brier_skill", "log_loss", "ece",
                           "lift_top_decile", "n", "positives", "by_stage", "by_segment"}
    assert report["n"] == y.size and report["positives"] == int(y.sum())
    assert set(report["by_stage"]) == {"proposal", "qualified", "missing"}
    assert report["by_segment"]["tiny"]["auc"] is None
    assert report["by_segment"]["big"]["n"] == y.size - 10
    assert report["auc"] == pytest.approx(ev.roc_auc(y, p))
    json.dumps(report, allow_nan=False)


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="same rows"):
        ev.brier([0, 1], [0.5])


# --- plots ---------------------------------------------------------------------------
import io  # noqa: E402

import pandas as pd  # noqa: E402
from matplotlib.collections import PathCollection, PolyCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from training import plots  # noqa: E402


def _renders(fig: Figure) -> None:
    assert isinstance(fig, Figure)
    fig.savefig(io.BytesIO(), format="png")


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(3)
    p = rng.uniform(0, 1, 200)
    y = (rng.uniform(size=200) < p).astype(int)
    return y, {"model": p, "stage_rate": np.clip(p + rng.normal(0, 0.2, 200), 0, 1)}


def test_reliability_diagram(small):
    y, probs = small
    fig = plots.reliability_diagram(y, probs)
    _renders(fig)
    top = fig.axes[0]
    assert len(top.get_lines()) == 1 + len(probs)  # diagonal + one per model
    assert [t.get_text() for t in top.get_legend().get_texts()][1:] == list(probs)


def test_roc_and_gain_curves(small):
    y, probs = small
    roc = plots.roc_curves(y, probs)
    _renders(roc)
    assert len(roc.axes[0].get_lines()) == 1 + len(probs)
    assert "AUC" in roc.axes[0].get_legend().get_texts()[1].get_text()
    gain = plots.cumulative_gain(y, probs)
    _renders(gain)
    lines = gain.axes[0].get_lines()
    assert len(lines) == 2 + len(probs)  # random, perfect, models
    assert lines[-1].get_ydata()[-1] == pytest.approx(1.0)


def test_feature_importance_keeps_top():
    fig = plots.feature_importance(["a", "b", "c", "d"], [1.0, 5.0, 3.0, 0.5], top=3)
    _renders(fig)
    ax = fig.axes[0]
    assert len(ax.patches) == 3
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "c", "b"]


def test_contribution_summary_ignores_bias_column():
    rng = np.random.default_rng(4)
    X = pd.DataFrame({"days": rng.uniform(0, 50, 100), "amount": rng.uniform(0, 1, 100),
                      "segment": pd.Categorical(rng.choice(["a", "b"], 100))})
    X.loc[:5, "days"] = np.nan
    contrib = np.column_stack([X["days"].fillna(0) / 10, rng.normal(0, 0.01, 100),
                               rng.normal(0, 0.5, 100), np.full(100, -1.0)])
    fig = plots.contribution_summary(contrib, X, top=2)
    _renders(fig)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["segment", "days"]
    assert sum(isinstance(c, PathCollection) for c in ax.collections) == 4  # missing + present per feature
    with pytest.raises(ValueError, match="shape"):
        plots.contribution_summary(contrib[:, :2], X)


def test_forecast_fan():
    periods = pd.period_range("2024-01", periods=4, freq="M")
    fig = plots.forecast_fan(periods, [1, 2, 3, 4], [2, 3, 4, 5], [3, 4, 5, 6], actuals=[2.5, 3.1, np.nan, np.nan])
    _renders(fig)
    ax = fig.axes[0]
    assert sum(isinstance(c, PolyCollection) for c in ax.collections) == 1
    assert len(ax.get_lines()) == 2

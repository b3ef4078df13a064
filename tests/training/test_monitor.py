"""The monitor: realised calibration and Brier on a hand-checked log, drift found after a
generated regime change and not without one, the verdict's exit status."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.build import FeatureBuilder
from features.synthetic import generate_data
from features.synthetic.regime import RegimeChange
from features.timetravel import truncate_at
from training.monitoring import performance as perf
from training.monitoring.drift import DriftThresholds, psi
from training.monitoring.monitor import MonitorConfig, VersionInfo, monitor_report
from training.monitoring.reference import build_reference, column_reference, deal_features, shares
from training.store.connection import open_store
from training.store.score_log import score_rows
from training.store.scores import record_scores

CHANGE, TRAINED_UNTIL = "2024-07-01", "2024-05-01"


def test_realised_figures_of_a_hand_checked_log():
    y, p = np.array([1, 0, 1, 0]), np.array([0.8, 0.2, 0.6, 0.4])
    got = perf.realised(y, p)
    assert got["brier"] == pytest.approx((0.04 + 0.04 + 0.16 + 0.16) / 4)
    assert got["ece"] == pytest.approx((0.2 + 0.2 + 0.4 + 0.4) / 4)  # one row per bin, each off by |y - p|
    assert got["auc"] == 1.0 and got["n"] == 4 and got["won_rate"] == 0.5
    assert [(r["bin"], r["count"], r["observed_rate"]) for r in got["reliability"]] == \
        [(2, 1, 0.0), (4, 1, 0.0), (6, 1, 1.0), (8, 1, 1.0)]
    expected = perf.expected(p)
    assert expected["brier"] == pytest.approx((0.16 + 0.16 + 0.24 + 0.24) / 4)
    assert 0 < expected["ece"] < 0.5


def test_expected_figures_match_outcomes_drawn_from_the_probabilities():
    rng = np.random.default_rng(1)
    p = rng.uniform(0.05, 0.9, 20_000)
    y = (rng.random(p.size) < p).astype(float)
    exp, real = perf.expected(p), perf.realised(y, p)
    assert abs(real["brier"] - exp["brier"]) < 3 * exp["brier_se"]
    assert real["ece"] == pytest.approx(exp["ece"], abs=0.01)


def test_psi_and_shares():
    ref = column_reference(pd.Series(np.arange(1000, dtype=float)))
    assert len(ref["edges"]) == 9 and np.allclose(ref["shares"][:10], 0.1) and ref["shares"][10] == 0
    assert psi(ref["shares"], shares(pd.Series(np.arange(1000, dtype=float)), ref)) == 0
    shifted = shares(pd.Series(np.arange(1000, dtype=float) + 500), ref)
    assert psi(ref["shares"], shifted) > 0.25
    cat = column_reference(pd.Series(["a"] * 70 + ["b"] * 30 + [None] * 0, dtype="string"))
    assert cat["levels"] == ["a", "b"]
    assert shares(pd.Series(["a", "c", None], dtype="string"), cat).tolist() == pytest.approx([1 / 3, 0, 1 / 3, 1 / 3])
    assert DriftThresholds().level(0.05) == "ok" and DriftThresholds().level(0.3) == "alert"


def _logged_monitor(tmp_path, regime: RegimeChange | None) -> dict:
    """A history (with or without a change), a reference of the weeks before TRAINED_UNTIL,
    weekly scores logged from then on (the truth's win probability stands for the model),
    and the monitor's report."""
    data, truth = generate_data(2500, seed=4, regime=regime)
    builder = FeatureBuilder().fit(truncate_at(data, TRAINED_UNTIL))
    p_true = truth.set_index("deal_id")["p_win_true"]
    before = builder.transform(data, pd.date_range("2024-02-05", TRAINED_UNTIL, freq="W-MON"))
    reference = build_reference(before[deal_features(builder)], p_true.reindex(before["deal_id"]).to_numpy(), "test")
    tmp_path.mkdir()
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    weekly = builder.transform(data, pd.date_range(TRAINED_UNTIL, "2024-12-31", freq="W-MON"))[["deal_id", "as_of"]]
    p = p_true.reindex(weekly["deal_id"]).to_numpy()
    scored = {**weekly, "close_probability": p, "score": np.clip(np.rint(p * 100), 1, 99).astype(int),
              "tier": ["warm"] * len(p), "top_factors": [None] * len(p)}
    record_scores(store, score_rows(scored, "leadscore", 1))
    try:
        return monitor_report(store, data, MonitorConfig(min_outcomes=100, drift=DriftThresholds(min_rows=60)),
                              version_info=lambda _name, _v: VersionInfo(builder, reference, {"brier": 0.18}))
    finally:
        store.close()


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("monitor")
    return {"plain": _logged_monitor(root / "plain", None), "changed": _logged_monitor(root / "changed",
                                                                                        RegimeChange(CHANGE))}


def test_drift_is_found_after_a_regime_change(reports):
    changed = reports["changed"]
    flagged = {r["feature"] for r in changed["drift"]["recent"] if r["level"] == "alert"}
    assert "product" in flagged, changed["drift"]["recent"][:5]  # the new product line
    weeks = pd.DataFrame(changed["drift"]["by_week"])
    starts = pd.to_datetime(weeks["window_start"]).dt.tz_localize(None)
    assert (starts.dt.dayofweek == 0).all()  # weeks from Monday
    first = starts[weeks["level"] == "alert"].min()
    assert pd.Timestamp(CHANGE) <= first <= pd.Timestamp(CHANGE) + pd.Timedelta(days=21)
    assert (weeks.loc[starts < CHANGE, "level"] != "alert").all()
    assert changed["verdict"]["exit_status"] == 1 and changed["verdict"]["line"].startswith("ALERT: product PSI")


def test_no_drift_is_found_without_one(reports):
    plain = reports["plain"]
    assert max(r["psi"] for r in plain["drift"]["recent"]) < 0.1, plain["drift"]["recent"][:3]
    assert not [f for f in plain["verdict"]["findings"] if "PSI" in f["finding"]]


def test_realised_figures_use_mature_scores_and_sit_beside_the_expectation(reports):
    plain = reports["plain"]
    perf_v = plain["performance"]["1"]
    assert 100 < perf_v["realised"]["n"] < plain["scores"]["closed"]  # mature scores only
    assert perf_v["test_fold"] == {"brier": 0.18}
    assert len(perf_v["by_decile"]) == 10 and {r["segment"] for r in perf_v["by_segment"]} == \
        {"SMB", "MidMarket", "Enterprise"}
    # the stand-in "model" (the truth's win probability at creation) is not calibrated for
    # deals that are already under way: the realised Brier departs from its expectation
    assert perf_v["realised"]["brier"] > perf_v["expected_closed"]["brier"] + 2 * perf_v["expected_closed"]["brier_se"]
    assert plain["verdict"]["level"] == "warn" and plain["verdict"]["exit_status"] == 1


def _report(score_psi: float, realised_brier: float) -> dict:
    return {"drift": {"recent": [{"feature": "(score)", "psi": score_psi,
                                  "level": DriftThresholds().level(score_psi)}]},
            "performance": {"2": {"realised": {"n": 500, "brier": realised_brier}, "test_fold": {"brier": 0.15},
                                  "expected_closed": {"brier": 0.15, "brier_se": 0.005}}}}


def test_exit_status_follows_the_worst_finding_and_the_thresholds():
    from training.monitoring.monitor import verdict

    ok = verdict(_report(0.02, 0.152), MonitorConfig())
    assert (ok["level"], ok["exit_status"]) == ("ok", 0) and ok["line"].startswith("OK")
    drifted = verdict(_report(0.3, 0.152), MonitorConfig())
    assert (drifted["level"], drifted["exit_status"]) == ("alert", 1) and "(score) PSI 0.30" in drifted["line"]
    worse = verdict(_report(0.02, 0.19), MonitorConfig())
    assert worse["level"] == "alert" and "realised Brier 0.190 vs test fold 0.150" in worse["line"]
    lenient = MonitorConfig(brier_tolerance=0.5, min_outcomes=1000)  # 500 outcomes: not judged
    assert verdict(_report(0.02, 0.19), lenient)["exit_status"] == 0


def test_calibration_drift_warns_even_when_the_brier_holds():
    """Ranking intact (Brier as trained) but probabilities 3 points high: the ECE rule warns;
    the same ECE is no finding when the expected ECE (few outcomes: noisy) is that large."""
    from training.monitoring.monitor import verdict

    def report(realised_ece: float, expected_ece: float) -> dict:
        r = _report(0.02, 0.152)
        perf = r["performance"]["2"]
        perf["realised"]["ece"], perf["test_fold"]["ece"], perf["expected_closed"]["ece"] = realised_ece, 0.014, \
            expected_ece
        return r

    drifted = verdict(report(0.033, 0.003), MonitorConfig())
    assert drifted["level"] == "warn" and "realised ECE 0.033 vs 0.014" in drifted["line"]
    assert verdict(report(0.028, 0.003), MonitorConfig())["level"] == "ok"  # within 0.015 of the test fold's
    assert verdict(report(0.033, 0.025), MonitorConfig())["level"] == "ok"  # noise of few outcomes explains it
    assert verdict(report(0.033, 0.003), MonitorConfig(ece_tolerance=0.05))["level"] == "ok"

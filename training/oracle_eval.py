"""Evaluation against the generator's ground truth (generated data only).

The truth file is read here, after training, to put the model beside the best possible
predictor; the models never see it.
"""
from __future__ import annotations

import pandas as pd

from features.schema import CanonicalData
from training import evaluate as ev
from training.predictor import LeadScorePredictor


def oracle_test_metrics(data: CanonicalData, truth: pd.DataFrame, test: pd.DataFrame, base_rate: float) -> dict:
    """Full oracle (true P(won | true state at T)) on the same test rows as the model."""
    from features.snapshots import running_state
    from features.synthetic import oracle_close_probability

    running = running_state(data)  # the deals' event state once, asked at every test date
    parts = [oracle_close_probability(data, truth, t, running=running).assign(as_of=t)
             for t in test["as_of"].unique()]
    oracle = pd.concat(parts, ignore_index=True)
    merged = test[["deal_id", "as_of", "won"]].merge(oracle, on=["deal_id", "as_of"], how="left")
    if merged["p_won_oracle"].isna().any():
        raise RuntimeError("oracle missing for some test rows: generator truth and data disagree")
    return ev.classification_report(merged["won"].to_numpy(), merged["p_won_oracle"].to_numpy(), base_rate)


def creation_time_metrics(predictor: LeadScorePredictor, data: CanonicalData, truth: pd.DataFrame | None,
                          start: pd.Timestamp, end: pd.Timestamp) -> dict:
    """Model vs creation-time oracle on snapshots taken at each deal's creation.

    Deals created in [start, end) whose outcome is known and that were open at creation
    (same-day closes at the very creation time have no snapshot); the model scores each at its own
    created_at (history aggregates as of that moment), the oracle is the generator's
    P(won | what is recorded at creation) with the latent quality marginalised out.
    """
    deals = data.deals
    # a deal closed the moment it was created was never open (open at T: created_at <= T < closed_at)
    opened = deals["closed_at"].isna() | (deals["closed_at"] > deals["created_at"])
    chosen = deals[(deals["created_at"] >= start) & (deals["created_at"] < end) & deals["outcome"].notna() & opened]
    if chosen.empty:
        return {"n": 0}
    rows = pd.DataFrame({"deal_id": chosen["deal_id"].to_numpy(), "as_of": chosen["created_at"].to_numpy()})
    feats = predictor.builder.transform_rows(data, rows)
    scored = predictor.score_features(feats)
    y = feats["deal_id"].map(deals.set_index("deal_id")["outcome"].eq("won").astype(float)).to_numpy()
    out = {"n": int(len(y)), "auc": ev.roc_auc(y, scored["close_probability"].to_numpy()),
           "brier": ev.brier(y, scored["close_probability"].to_numpy()),
           "ece": ev.expected_calibration_error(y, scored["close_probability"].to_numpy())}
    if truth is not None and "p_win_creation_oracle" in truth:
        p_or = feats["deal_id"].map(truth.set_index("deal_id")["p_win_creation_oracle"]).to_numpy(dtype=float)
        out["oracle_auc"] = ev.roc_auc(y, p_or)
        out["oracle_brier"] = ev.brier(y, p_or)
        out["auc_gap_to_oracle"] = None if out["auc"] is None or out["oracle_auc"] is None \
            else float(out["oracle_auc"] - out["auc"])
    return out

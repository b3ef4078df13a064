"""Explanations never give an age or a time in stage beyond every won deal seen in
training as a reason to win (`FactorExplainer._no_age_beyond_won`), on a hand-built case."""
from __future__ import annotations

import numpy as np
import pandas as pd

from training.explain import FactorExplainer

STAGES = ["lead", "proposal"]


def fitted() -> FactorExplainer:
    won = pd.DataFrame({"stage": pd.Categorical(["lead"] * 30 + ["proposal"] * 30, categories=STAGES),
                        "days_in_stage": np.r_[np.linspace(1, 40, 30), np.linspace(1, 90, 30)],
                        "deal_age_days": np.linspace(5, 200, 60), "amount": np.linspace(100, 1000, 60)})
    return FactorExplainer(top_k=3).fit(won, lambda c: c.replace("_", " "))


def test_an_age_beyond_every_win_is_never_a_reason_to_win():
    X = pd.DataFrame({"stage": pd.Categorical(["lead", "lead", "proposal"], categories=STAGES),
                      "days_in_stage": [1500.0, 30.0, 60.0],  # lead: won deals stayed at most 40 days
                      "deal_age_days": [1500.0, 150.0, 300.0], "amount": [500.0, 500.0, 500.0]})
    contributions = np.array([[0.0, 2.0, 1.5, 0.3], [0.0, 2.0, 1.5, 0.3], [0.0, 2.0, 1.5, 0.3]])
    out = fitted().explain(X, contributions)
    assert [f["feature"] for f in out[0]["positive"]] == ["amount"]  # both ages beyond every win: left out
    assert [f["feature"] for f in out[1]["positive"]] == ["days_in_stage", "deal_age_days", "amount"]
    # proposal: 60 days in stage is within the won deals' 90; an age of 300 is beyond every win (200)
    assert [f["feature"] for f in out[2]["positive"]] == ["days_in_stage", "amount"]


def test_an_old_age_still_shows_as_a_reason_to_lose():
    X = pd.DataFrame({"stage": pd.Categorical(["lead"], categories=STAGES), "days_in_stage": [1500.0],
                      "deal_age_days": [1500.0], "amount": [500.0]})
    out = fitted().explain(X, np.array([[0.0, -2.0, -1.0, 0.2]]))
    assert [f["feature"] for f in out[0]["negative"]] == ["days_in_stage", "deal_age_days"]
    assert "1,500 days in lead" in out[0]["negative"][0]["sentence"]


def test_the_dict_of_arrays_path_filters_the_same_way():
    cols = {"stage": np.array(["lead"], dtype=object), "days_in_stage": np.array([1500.0]),
            "deal_age_days": np.array([1500.0]), "amount": np.array([500.0])}
    out = fitted().explain(cols, np.array([[0.0, 2.0, 1.5, 0.3]]))
    assert [f["feature"] for f in out[0]["positive"]] == ["amount"]

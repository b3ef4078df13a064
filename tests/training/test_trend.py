"""Score trends: the rule on hand-made scores, the service's index and the score file's
reading of the log give the same trend."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from training.monitoring.trend import TrendIndex, log_trends, trends


def factors(positive: list[str], negative: list[str]) -> dict:
    return {"positive": [{"feature": n} for n in positive], "negative": [{"feature": n} for n in negative]}


def test_the_rule():
    now = factors(["stage", "activities_30d"], ["days_in_stage"])
    got = trends(np.array([0.50, 0.30, 0.42, 0.4]), [now, now, now, now], np.array([0.40, 0.40, 0.40, np.nan]),
                 [dt.datetime(2024, 3, 1)] * 4, [["stage"], ["days_in_stage"], [], None])
    assert got[0] == {"direction": "improving", "change": 0.1, "since": dt.datetime(2024, 3, 1),
                      "factor": "activities_30d"}  # stage was a top factor already
    assert got[1]["direction"] == "declining" and got[1]["factor"] == "days_in_stage"  # the strongest, none new
    assert got[2]["direction"] == "steady" and got[2]["factor"] is None
    assert got[3] is None  # no earlier score


def _scored(ids, at, p, f) -> dict:
    return {"deal_id": np.array(ids, dtype=object), "as_of": np.full(len(ids), np.datetime64(at)),
            "close_probability": np.array(p), "top_factors": [f] * len(ids)}


def test_the_index_and_the_log_agree():
    index = TrendIndex()
    before = factors(["stage"], ["amount"])
    after = factors(["activities_30d", "stage"], ["amount"])
    assert index.observe(_scored(["a", "b"], "2024-03-01", [0.2, 0.6], before)) == [None, None]
    index.observe(_scored(["a"], "2024-03-08", [0.25, ], before))
    live = index.observe(_scored(["a", "b", "c"], "2024-03-15", [0.35, 0.5, 0.1], after))
    assert [t and t["direction"] for t in live] == ["improving", "declining", None]
    assert live[0]["since"] == dt.datetime(2024, 3, 1) and live[0]["factor"] == "activities_30d"
    assert index.observe(_scored(["b"], "2024-05-01", [0.1], after)) == [None]  # older scores left the window
    logged = pd.DataFrame({"deal_id": ["a", "b", "a"], "as_of": pd.to_datetime(["2024-03-01", "2024-03-01",
                                                                                "2024-03-08"]),
                           "probability": [0.2, 0.6, 0.25], "top_factors": [["stage", "amount"]] * 3})
    frame = pd.DataFrame({"deal_id": ["a", "b", "c"], "as_of": pd.Timestamp("2024-03-15"),
                          "close_probability": [0.35, 0.5, 0.1], "top_factors": [after] * 3})
    assert log_trends(frame, logged) == [t and {**t, "since": t["since"].isoformat()} for t in live]
    assert log_trends(frame, logged.iloc[:0]) == [None, None, None]

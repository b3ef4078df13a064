"""`leadscore score`'s table: best score first, the deal's stage, amount and owner, the
reasons in words, what the score rests on, rounded for a CSV, no internal columns."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.dataset import read_dataset
from features.snapshots import deals_at
from features.synthetic import generate, generate_data
from serving.cli import app
from training.run import train
from training.scoring import (
    BASIS_COLD_START,
    BASIS_MODEL,
    COLUMNS,
    REASON_COLUMNS,
    RISK_COLUMNS,
    basis,
    csv_table,
    deal_context,
    score_table,
)


def _factor(sentence: str, impact: float) -> dict:
    return {"feature": "x", "value": 1.0, "impact": impact, "sentence": sentence}


def _scored() -> pd.DataFrame:
    return pd.DataFrame({
        "deal_id": ["a", "b", "c"], "as_of": pd.Timestamp("2024-05-01"),
        "close_probability": [0.123456789, 0.87654321, 0.5], "score": [12, 88, 50], "tier": ["cold", "hot", "warm"],
        "p_close_within_30d": [0.01234, 0.5, 0.25], "p_close_within_60d": [0.02, 0.6, 0.3],
        "p_close_within_90d": [0.03, 0.7, 0.35],
        "expected_close_date_p10": pd.to_datetime(["2024-05-10 13:00", "2024-05-11 00:00", "2024-05-12 00:00"]),
        "expected_close_date_p50": pd.to_datetime(["2024-06-10", "2024-06-11", "2024-06-12"]),
        "expected_close_date_p90": pd.to_datetime(["2024-07-10", "2024-07-11", "2024-07-12"]),
        "close_days_p50": [40.123, 41.456, 42.0], "log_close_days_p50": [3.7, 3.7, 3.7],
        "top_factors": [{"positive": [_factor("p1", 0.3), _factor("p2", 0.2), _factor("p3", 0.1), _factor("p4", 0.05)],
                         "negative": [_factor("n1", -0.2)]},
                        {"positive": [], "negative": []},
                        {"positive": [_factor("q1", 0.4)], "negative": [_factor("m1", -0.3), _factor("m2", -0.1)]}],
        "model_version": 4, "basis": BASIS_MODEL})


def _context() -> pd.DataFrame:
    return pd.DataFrame({"deal_id": ["c", "a", "b"], "stage": ["proposal", "lead", None],
                         "amount": [1234.5678, np.nan, 10.0], "owner": ["u7", "u1", None]})


def test_the_table_is_sorted_with_context_and_reasons_in_words():
    table = score_table(_scored(), _context())
    assert table["deal_id"].tolist() == ["b", "c", "a"]  # best score first
    assert list(table.columns) == [c for c in COLUMNS if c in table] + ["top_factors"]
    assert "log_close_days_p50" not in table
    a = table.set_index("deal_id").loc["a"]
    assert (a["stage"], a["owner"], a["basis"]) == ("lead", "u1", BASIS_MODEL) and np.isnan(a["amount"])
    assert [a[c] for c in REASON_COLUMNS] == ["p1", "p2", "p3"]  # the top three, in order
    assert a[RISK_COLUMNS[0]] == "n1" and a[RISK_COLUMNS[1:]].isna().all()
    assert table.set_index("deal_id").loc["b", REASON_COLUMNS].isna().all()


def test_the_csv_is_rounded_without_structured_factors(tmp_path):
    table = csv_table(score_table(_scored(), _context()))
    assert "top_factors" not in table
    c = table.set_index("deal_id")
    assert c.loc["a", "close_probability"] == 0.123 and c.loc["a", "p_close_within_30d"] == 0.012
    assert c.loc["c", "amount"] == 1234.57 and c.loc["c", "close_days_p50"] == 42.0
    table.to_csv(tmp_path / "s.csv", index=False)
    text = (tmp_path / "s.csv").read_text()
    assert "0.123," in text and "0.123456789" not in text and "2024-05-10," in text and "13:00" not in text


def test_the_deal_context_is_the_state_at_the_as_of_date():
    data, _ = generate_data(800, seed=3)
    at = data.data_end - pd.Timedelta(days=200)
    context = deal_context(data, at).set_index("deal_id")
    state = deals_at(data, at).set_index("deal_id")
    assert context.index.equals(state.index)
    assert context["stage"].equals(state["stage"]) and context["amount"].equals(state["amount"])
    owners = data.deals.set_index("deal_id")["owner"]
    assert context["owner"].equals(owners.loc[context.index].rename("owner"))


@pytest.mark.slow
def test_a_trained_model_writes_its_reasons(small_data, small_predictor):
    data, _ = small_data
    scored = small_predictor.score(data, data.data_end, explain=True).assign(model_version=1,
                                                                             basis=basis(small_predictor))
    table = score_table(scored, deal_context(data, data.data_end))
    assert (table["basis"] == BASIS_MODEL).all() and table["score"].is_monotonic_decreasing
    for _, row in table.head(50).iterrows():
        words = [f["sentence"] for f in row["top_factors"]["positive"]][:3]
        assert [w for w in row[REASON_COLUMNS].tolist() if w is not None] == words


def test_cold_start_scores_say_so(local_mlflow_uri, tmp_path):
    generate(tmp_path / "tiny", n_deals=700, seed=3)
    summary = train(read_dataset(tmp_path / "tiny"), experiment="cold")
    assert summary["model_kind"] == "stage_baseline"
    for suffix in ("csv", "json"):
        out = CliRunner().invoke(app, ["score", "--data", str(tmp_path / "tiny"), "--out", str(tmp_path / f"s.{suffix}")])
        assert out.exit_code == 0, out.output
    table = pd.read_csv(tmp_path / "s.csv")
    assert (table["basis"] == BASIS_COLD_START).all() and len(table) > 0
    assert table["score"].is_monotonic_decreasing
    assert not [c for c in table.columns if c.startswith("log_") or c == "top_factors"]
    assert {"stage", "amount", "owner"} <= set(table.columns)
    assert table["close_probability"].map(lambda p: round(p, 3) == p).all()
    records = json.loads((tmp_path / "s.json").read_text())
    assert records[0]["basis"] == BASIS_COLD_START and "top_factors" in records[0]

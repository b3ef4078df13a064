"""The leakage guard on hand-built deal frames: a planted leak in each form (values,
missingness, levels) is named with its AUC; honest columns, id-like columns and the
generator's own columns are not; `--keep-column` keeps one; the builder copy leaves out
exactly the features derived from a column."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.build import FeatureBuilder
from features.definitions import AMOUNT_FEATURES
from features.leakage import (
    LEAK_AUC,
    derived_features,
    guard_leaks,
    leak_report,
    separation_auc,
    suspected_leaks,
    without_columns,
)
from features.schema import CanonicalData, DatasetMeta
from features.synthetic import generate_data

N = 400


def closed_deals(extra: dict, n: int = N, seed: int = 0, attributes: dict | None = None) -> CanonicalData:
    """n closed deals, every other one won, plus the `extra` columns (functions of won)."""
    rng = np.random.default_rng(seed)
    won = np.arange(n) % 2 == 0
    created = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 300, n), unit="D")
    deals = pd.DataFrame({"deal_id": [f"d{i}" for i in range(n)], "created_at": created,
                          "closed_at": created + pd.Timedelta(days=30), "outcome": np.where(won, "won", "lost"),
                          "amount": rng.lognormal(9, 1, n), "source": rng.choice(["web", "event", "referral"], n)})
    for name, make in extra.items():
        deals[name] = make(won, rng)
    return CanonicalData(deals=deals, meta=DatasetMeta(stages=["new", "demo"], attributes=attributes or {}))


def test_an_amount_that_is_zero_for_every_lost_deal_is_a_leak():
    data = closed_deals({})
    won = (data.deals["outcome"] == "won").to_numpy()
    data.deals.loc[~won, "amount"] = 0.0
    [leak] = suspected_leaks(data)
    assert (leak.column, leak.test) == ("amount", "values") and leak.auc == pytest.approx(1.0)


def test_a_column_filled_in_only_for_won_deals_is_a_leak_by_its_missingness():
    data = closed_deals({"signed_on": lambda won, rng: np.where(won, rng.random(len(won)), np.nan)},
                        attributes={"signed_on": "numeric"})
    [leak] = suspected_leaks(data)
    assert (leak.column, leak.test, leak.auc) == ("signed_on", "missingness", 1.0)


def test_a_category_typed_in_after_the_outcome_is_a_leak_by_its_out_of_fold_level_rate():
    def tags(won, rng):  # 'closed by X' / 'lost to Y' with a few honest labels mixed in
        labels = np.where(won, rng.choice(["closed by sales", "will revert"], len(won), p=[0.99, 0.01]),
                          rng.choice(["lost to competitor", "will revert"], len(won), p=[0.99, 0.01]))
        return labels

    data = closed_deals({"tags": tags}, attributes={"tags": "categorical"})
    [leak] = suspected_leaks(data)
    assert leak.column == "tags" and leak.test == "out-of-fold level win rate" and leak.auc >= LEAK_AUC
    assert "suspected leak: 'tags'" in leak_report(data)[0] and "--keep-column tags" in leak_report(data)[0]


def test_honest_and_id_like_columns_are_not_leaks():
    data = closed_deals({
        "score": lambda won, rng: rng.normal(0, 1, len(won)) + 1.5 * won,  # a strong honest signal (AUC ~0.85)
        "ticket": lambda won, rng: [f"t{i}" for i in range(len(won))],  # one level per deal
        "sometimes": lambda won, rng: np.where(rng.random(len(won)) < 0.5, 1.0, np.nan),
    }, attributes={"score": "numeric", "ticket": "categorical", "sometimes": "numeric"})
    assert suspected_leaks(data) == []


def test_too_few_closed_deals_judge_nothing():
    data = closed_deals({}, n=30)
    data.deals.loc[data.deals["outcome"] == "lost", "amount"] = 0.0
    assert suspected_leaks(data) == []


def test_separation_auc_takes_the_better_direction():
    won = np.array([True, True, False, False])
    assert separation_auc(np.array([4.0, 3, 2, 1]), won) == 1.0
    assert separation_auc(np.array([1.0, 2, 3, 4]), won) == 1.0
    assert separation_auc(np.array([1.0, 1, 1, 1]), won) == 0.5
    assert separation_auc(np.array([1.0, 2]), np.array([True, True])) == 0.5


def test_keep_column_keeps_a_suspected_leak_and_names_an_unknown_one():
    data = closed_deals({})
    data.deals.loc[data.deals["outcome"] == "lost", "amount"] = 0.0
    left_out = guard_leaks(data)
    assert left_out.excluded_columns == ["amount"] and not left_out.kept
    assert "left out of the model (keep it with --keep-column amount)" in left_out.messages()[0]
    kept = guard_leaks(data, keep=("amount", "nope"))
    assert kept.excluded_columns == [] and [leak.column for leak in kept.kept] == ["amount"]
    assert kept.unknown_keeps == ("nope",)
    assert kept.to_dict()["kept"]["amount"]["auc"] == pytest.approx(1.0)
    assert any("kept in the model as asked" in m for m in kept.messages())
    assert any("--keep-column nope: not a suspected leak" in m for m in kept.messages())


def test_a_lower_threshold_leaves_out_a_strong_column_the_default_keeps():
    # a near-leak (AUC ~0.93): kept at the default 0.97, left out with --leak-auc 0.9
    data = closed_deals({"score": lambda won, rng: rng.normal(0, 1, len(won)) + 2.1 * won},
                        attributes={"score": "numeric"})
    assert guard_leaks(data).excluded_columns == []
    strict = guard_leaks(data, threshold=0.9)
    assert strict.excluded_columns == ["score"] and 0.9 <= strict.excluded[0].auc < LEAK_AUC


@pytest.fixture(scope="module")
def generated():
    return generate_data(1500, seed=3)[0]


def test_the_generators_columns_are_not_leaks(generated):
    assert suspected_leaks(generated) == []
    assert guard_leaks(generated).to_dict()["n_excluded"] == 0


def test_without_columns_leaves_out_exactly_the_derived_features(generated):
    builder = FeatureBuilder().fit(generated)
    names = list(builder.feature_names_)
    assert derived_features(builder, "amount") == [n for n in names if n in AMOUNT_FEATURES]
    assert derived_features(builder, "source") == ["source_win_rate", "source_closed_deals", "source"]
    assert derived_features(builder, "industry") == ["industry"]
    lean = without_columns(builder, ["amount", "source"])
    assert not set(lean.feature_names_) & (set(AMOUNT_FEATURES) | {"source", "source_win_rate"})
    assert len(lean.feature_names_) == len(names) - 7
    assert builder.feature_names_ == names  # the fitted builder itself is unchanged
    X = lean.transform(generated, generated.data_end)
    assert list(X.columns) == ["deal_id", "as_of", *lean.feature_names_]
    assert without_columns(builder, []) is builder


def test_ingest_reports_a_suspected_leak(tmp_path):
    import yaml

    from features.sources import ingest

    won = np.arange(200) % 2 == 0
    pd.DataFrame({"id": [f"l{i}" for i in range(200)], "Converted": won.astype(int),
                  "Quality": np.where(won, "high", None), "Source": np.resize(["web", "ads", "event"], 200)}
                 ).to_csv(tmp_path / "leads.csv", index=False)
    mapping = {"static": True, "stages": {"order": ["lead"]},
               "sources": {"leads": {"type": "csv", "path": str(tmp_path / "leads.csv")}},
               "tables": {"deals": {"source": "leads", "columns": {"deal_id": "id", "source": "Source"},
                                    "outcome": {"from": "column", "column": "Converted", "won": [1], "lost": [0]},
                                    "attributes": {"quality": {"column": "Quality", "kind": "categorical"}}}}}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(mapping))
    report = ingest(tmp_path / "m.yaml", tmp_path / "out")
    [warning] = [w for w in report.warnings if "suspected leak" in w]
    assert "'quality' (AUC 1.0000" in warning and "--keep-column quality" in warning

"""The generator's dirty export, end to end: generate --export -> ingest with the written
mapping -> a dataset whose every planted problem is where the truth says it is."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.dataset import read_dataset
from features.snapshots import deals_at
from features.sources import ingest
from features.synthetic import generate_data
from features.synthetic.params import ExportParams
from serving.cli import app

N_DEALS, SEED = 3000, 3


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("dirty")
    result = CliRunner().invoke(app, ["generate", "--deals", str(N_DEALS), "--seed", str(SEED),
                                      "--export", str(root / "export")])
    assert result.exit_code == 0, result.output
    report = ingest(root / "export" / "mapping.yaml", root / "data")
    return {"root": root, "export": root / "export", "report": report, "data": read_dataset(root / "data"),
            "planted": pd.read_parquet(root / "export" / "truth" / "export_truth.parquet"),
            "fact": pd.read_csv(root / "export" / "deals.csv", dtype=str, keep_default_na=False)}


def test_export_is_a_star_schema_with_current_state_only(chain):
    files = sorted(p.name for p in chain["export"].glob("*.csv"))
    assert files == ["accounts.csv", "deals.csv", "leads.csv", "products.csv", "teams.csv"]
    assert chain["data"].stage_events is not None  # only the export-date rows ingest made
    assert (chain["data"].stage_events["entered_at"] == chain["data"].meta.data_end).all()


def test_ingest_keeps_every_deal_and_the_zombies_are_open(chain):
    data, planted, report = chain["data"], chain["planted"], chain["report"]
    assert len(data.deals) == N_DEALS and report.rejects.empty
    deals = data.deals.set_index("deal_id").loc[planted["deal_id"]]
    zombie = planted["zombie"].to_numpy()
    assert deals["outcome"].isna().to_numpy()[zombie].all()
    assert (planted.loc[zombie, "outcome_clean"] == "lost").all()  # the truth: they were lost
    is_open = deals["outcome"].isna()
    assert zombie.sum() / is_open.sum() == pytest.approx(0.9, abs=0.01)


def test_unmatched_keys_only_where_the_export_plants_them(chain):
    joins = chain["report"].joins.set_index("source")
    planted = chain["planted"]
    assert joins.loc["accounts", "unmatched_rows"] == planted["orphan_account"].sum() > 0
    assert joins.loc[["products", "teams", "leads"], "unmatched_rows"].eq(0).all()
    joins_warned = [w.split(":")[0] for w in chain["report"].warnings if not w.startswith("suspected leak")]
    assert joins_warned == ["join accounts on Account ID"]


def test_product_key_is_spelled_two_ways_and_the_mapping_recodes_it(chain):
    codes = chain["fact"]["Product Code"]
    assert codes.str.endswith(" ").sum() == chain["planted"]["misspelled_key"].sum() > 0
    assert chain["data"].deals["product"].notna().all()


def test_close_date_column_holds_expected_dates_for_open_deals(chain):
    fact, data = chain["fact"], chain["data"]
    is_open = ~fact["Deal Stage"].isin(["Won", "Lost"])
    assert (fact.loc[is_open, "Close Date"] != "").sum() > 0
    assert "close_date_without_outcome" not in set(chain["report"].rejects.get("reason", []))
    state = deals_at(data, data.meta.data_end)
    assert state["expected_close_date"].notna().sum() == (fact.loc[is_open, "Close Date"] != "").sum()


def test_same_day_closes_are_valid(chain):
    deals = chain["data"].deals.set_index("deal_id")
    same = chain["planted"].loc[chain["planted"]["same_day"], "deal_id"]
    assert len(same) > 0
    assert (deals.loc[same, "closed_at"] == deals.loc[same, "created_at"]).all()
    assert (deals.loc[same, "outcome"] == "lost").all()


def test_won_only_column_leaks_the_outcome(chain):
    deals = chain["data"].deals
    assert deals["signed_value"].notna().eq(deals["outcome"] == "won").all()
    # and the ingestion names it (the leakage guard, features/leakage.py), nothing else
    leaks = [w for w in chain["report"].warnings if w.startswith("suspected leak")]
    assert len(leaks) == 1 and "'signed_value' (AUC 1.0000, by its missingness)" in leaks[0]


def test_labelled_losses_are_quick_so_every_old_closed_deal_was_won(chain):
    deals = chain["data"].deals
    age = (deals["closed_at"] - deals["created_at"]).dt.days
    longest_loss = age[deals["outcome"] == "lost"].max()
    assert longest_loss <= ExportParams().loss_marked_within_days
    assert (deals.loc[age > longest_loss, "outcome"] == "won").all()
    assert age[deals["outcome"] == "won"].max() > longest_loss


def test_open_pipeline_is_dozens_of_months_of_bookings(chain):
    deals = chain["data"].deals
    won = deals["outcome"] == "won"
    months = (deals["closed_at"].max() - deals["created_at"].min()).days / 30.4
    monthly = deals.loc[won, "amount"].sum() / months
    assert deals.loc[deals["outcome"].isna(), "amount"].sum() > 24 * monthly


def test_truth_files_and_generator_output_unchanged(chain):
    truth = chain["export"] / "truth"
    assert {p.name for p in truth.iterdir()} == {"truth.parquet", "params.json", "export_truth.parquet",
                                                 "export_params.json"}
    assert json.loads((truth / "export_params.json").read_text())["zombie_share"] == 0.9
    data, gen_truth = generate_data(N_DEALS, seed=SEED)
    pd.testing.assert_frame_equal(pd.read_parquet(truth / "truth.parquet"), gen_truth)
    planted = chain["planted"]
    np.testing.assert_array_equal(planted["outcome_clean"].to_numpy(dtype=object, na_value=None),
                                  data.deals["outcome"].to_numpy(dtype=object, na_value=None))


def test_zombie_share_zero_marks_every_loss(tmp_path):
    result = CliRunner().invoke(app, ["generate", "--deals", "800", "--seed", "1", "--export",
                                      str(tmp_path / "e"), "--zombie-share", "0"])
    assert result.exit_code == 0, result.output
    planted = pd.read_parquet(tmp_path / "e" / "truth" / "export_truth.parquet")
    assert not planted["zombie"].any()


def test_generate_needs_out_or_export():
    result = CliRunner().invoke(app, ["generate", "--deals", "10"])
    assert result.exit_code == 2 and "give --out" in result.output

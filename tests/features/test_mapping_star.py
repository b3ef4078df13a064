"""Mappings for real exports: star-schema joins with unmatched keys reported, per-column
recoding, expected close dates, snapshot-only exports (the current stage is a fact dated at
the export) and repeated snapshots (`ingest --append`); every new error message."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from features.build import FeatureBuilder
from features.dataset import read_dataset
from features.errors import MappingError
from features.mapping import load_mapping
from features.snapshots import deals_at
from features.sources import ingest
from serving.cli import app
from tests.features.conftest import ACTIVITIES, DEALS, HISTORY

EXPORTED = "2024-03-01"
STAGES = ["Prospecting", "Qualification", "Proposal", "Negotiation"]

FACT = pd.DataFrame([
    # id, created, close date (expected while open), stage, amount, product key, agent
    ["O1", "2024-01-02", "2024-02-01", "Won", "100", "GTX Pro", "ann"],
    ["O2", "2024-01-03", "2024-01-03", "Lost", "50", " gtx pro", "ben"],    # same-day close
    ["O3", "2024-01-10", "2024-04-15", "Negotiation", "300", "GTXPRO", "ann"],  # spelled a third way
    ["O4", "2024-01-15", "", "Prospecting", "80", "MG Special", "cat"],
    ["O5", "2024-02-01", "2024-05-01", "Proposal", "120", "Zeta", "ann"],     # product not in the file
], columns=["Opportunity", "Engaged", "Close Date", "Deal Stage", "Value", "Product", "Agent"])
PRODUCTS = pd.DataFrame({"Product": ["GTX Pro", "MG Special"], "Series": ["GTX", "MG"]})
TEAMS = pd.DataFrame({"Agent": ["ann", "ben", "cat"], "Manager": ["m1", "m1", "m2"],
                      "Office": ["East", "East", "West"]})


def star_mapping(folder: Path, **changes) -> dict:
    mapping = {
        "name": "star", "exported_at": EXPORTED,
        "sources": {
            "fact": {"type": "csv", "path": str(folder / "fact.csv"),
                     "recode": {"Product": {"strip": True, "case": "upper",
                                            "values": {"GTXPRO": "GTX PRO"}}}},
            "products": {"type": "csv", "path": str(folder / "products.csv"),
                         "recode": {"Product": {"case": "upper"}}},
            "teams": {"type": "csv", "path": str(folder / "teams.csv")}},
        "stages": {"order": STAGES, "won": ["Won"], "lost": ["Lost"]},
        "tables": {"deals": {
            "source": "fact",
            "join": [{"source": "products", "key": "Product", "columns": ["Series"]},
                     {"source": "teams", "key": "Agent", "columns": ["Manager", "Office"]}],
            "columns": {"deal_id": "Opportunity", "created_at": "Engaged", "closed_at": "Close Date",
                        "stage": "Deal Stage", "amount": "Value", "product": "Series", "owner": "Agent",
                        "team": "Manager", "region": "Office"},
            "date_format": "%Y-%m-%d",
            "outcome": {"from": "stage", "close_date_is_expected_while_open": True}}}}
    for path, value in changes.items():
        *head, last = path.split(".")
        node = mapping
        for key in head:
            node = node[key]
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return mapping


def write_export(folder: Path, fact: pd.DataFrame = FACT, mapping: dict | None = None, name: str = "m.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    fact.to_csv(folder / "fact.csv", index=False)
    PRODUCTS.to_csv(folder / "products.csv", index=False)
    TEAMS.to_csv(folder / "teams.csv", index=False)
    path = folder / name
    path.write_text(yaml.safe_dump(mapping or star_mapping(folder), sort_keys=False))
    return path


@pytest.fixture
def star(tmp_path: Path) -> Path:
    return write_export(tmp_path / "export")


# ----------------------------------------------------------------------------- joins and recoding

def test_star_joins_recode_keys_and_report_unmatched_ones(star, tmp_path):
    report = ingest(star, tmp_path / "out")
    deals = read_dataset(tmp_path / "out").deals.set_index("deal_id")
    # three spellings of one product key meet after strip + upper + the values map
    assert deals.loc[["O1", "O2", "O3"], "product"].tolist() == ["GTX", "GTX", "GTX"]
    assert deals.loc["O4", "product"] == "MG"
    assert deals.loc[["O1", "O4"], "region"].tolist() == ["East", "West"]
    joins = report.joins.set_index("source")
    assert joins.loc["products", ["rows", "matched", "unmatched_rows", "unmatched_keys"]].tolist() == [5, 4, 1, 1]
    assert joins.loc["products", "examples"] == "ZETA"
    assert joins.loc["teams", "unmatched_rows"] == 0
    assert len(report.warnings) == 1 and "join products on Product: 1 row(s)" in report.warnings[0]
    assert "ZETA" in report.warnings[0] and "recode" in report.warnings[0]


def test_unmatched_examples_are_at_most_five(tmp_path):
    fact = pd.concat([FACT] * 3, ignore_index=True)
    fact["Opportunity"] = [f"O{i}" for i in range(len(fact))]
    fact["Product"] = [f"P{i}" for i in range(len(fact))]
    report = ingest(write_export(tmp_path / "e", fact), tmp_path / "out")
    row = report.joins.set_index("source").loc["products"]
    assert row["unmatched_keys"] == 15 and len(row["examples"].split(", ")) == 5


def test_a_single_join_dict_still_works(tmp_path):
    mapping = star_mapping(tmp_path / "e")
    mapping["tables"]["deals"]["join"] = mapping["tables"]["deals"]["join"][1]
    for col in ("product",):
        mapping["tables"]["deals"]["columns"].pop(col)
    report = ingest(write_export(tmp_path / "e", mapping=mapping), tmp_path / "out")
    assert report.joins["source"].tolist() == ["teams"]
    assert read_dataset(tmp_path / "out").deals["team"].notna().all()


def test_unused_dimension_rows_are_not_rejects(tmp_path):
    products = pd.concat([PRODUCTS, pd.DataFrame({"Product": ["Never Sold"], "Series": ["X"]})])
    path = write_export(tmp_path / "e")
    products.to_csv(tmp_path / "e" / "products.csv", index=False)
    report = ingest(path, tmp_path / "out")
    assert report.rejects.empty
    assert report.counts.set_index("table").loc["products (joined into deals)"].tolist() == [3, 3, 0]


# ----------------------------------------------------------------------------- expected close dates

def test_close_date_of_open_deals_is_the_expected_date(star, tmp_path):
    report = ingest(star, tmp_path / "out")
    assert report.rejects.empty  # no close_date_without_outcome
    data = read_dataset(tmp_path / "out")
    deals = data.deals.set_index("deal_id")
    assert deals.loc["O3", "closed_at"] is pd.NaT and pd.isna(deals.loc["O3", "outcome"])
    assert deals.loc["O2", "closed_at"] == deals.loc["O2", "created_at"]  # same-day close is valid
    assert "expected_close_date" not in data.deals and "stage" not in data.deals
    now = deals_at(data, EXPORTED).set_index("deal_id")
    assert now.loc["O3", "expected_close_date"] == pd.Timestamp("2024-04-15")
    assert pd.isna(now.loc["O4", "expected_close_date"])
    assert data.meta.data_end == pd.Timestamp(EXPORTED)  # not the latest expected date


def test_expected_close_date_column_on_deals(tmp_path):
    fact = FACT.assign(**{"Expected": ["", "", "2024-04-20", "2024-06-01", ""],
                          "Close Date": ["2024-02-01", "2024-01-03", "", "", ""]})
    mapping = star_mapping(tmp_path / "e", **{"tables.deals.outcome": {"from": "stage"}})
    mapping["tables"]["deals"]["columns"]["expected_close_date"] = "Expected"
    ingest(write_export(tmp_path / "e", fact, mapping), tmp_path / "out")
    now = deals_at(read_dataset(tmp_path / "out"), EXPORTED).set_index("deal_id")
    assert now.loc[["O3", "O4"], "expected_close_date"].tolist() == [pd.Timestamp("2024-04-20"),
                                                                     pd.Timestamp("2024-06-01")]


# ----------------------------------------------------------------------------- snapshot-only exports

def test_snapshot_stage_is_a_fact_of_the_export_date_only(star, tmp_path):
    ingest(star, tmp_path / "out")
    data = read_dataset(tmp_path / "out")
    events = data.stage_events.set_index("deal_id")
    assert (events["entered_at"] == pd.Timestamp(EXPORTED)).all()
    before = deals_at(data, "2024-02-20").set_index("deal_id")
    at_export = deals_at(data, EXPORTED).set_index("deal_id")
    # before the export nobody knew O3 was in Negotiation: it sits in the first stage
    assert before.loc["O3", "stage"] == "Prospecting" and pd.isna(before.loc["O3", "expected_close_date"])
    assert at_export.loc["O3", "stage"] == "Negotiation"
    # the export shows the stage, not since when: the entry and the time in stage are unknown
    assert pd.isna(at_export.loc["O3", "stage_entered_at"]) and pd.isna(at_export.loc["O3", "days_in_stage"])
    assert before["days_in_stage"].isna().all() and at_export["days_in_stage"].isna().all()
    assert at_export.loc["O5", "stage"] == "Proposal"
    assert at_export.loc["O4", "stage"] == "Prospecting"  # first stage: no event needed
    assert "O4" not in events.index


def test_exported_at_option_overrides_the_mapping(star, tmp_path):
    ingest(star, tmp_path / "out", exported_at="2024-03-05")
    data = read_dataset(tmp_path / "out")
    assert (data.stage_events["entered_at"] == pd.Timestamp("2024-03-05")).all()
    assert data.meta.data_end == pd.Timestamp("2024-03-05")


def test_without_exported_at_the_data_end_dates_the_snapshot(tmp_path):
    path = write_export(tmp_path / "e", mapping=star_mapping(tmp_path / "e", exported_at=None))
    ingest(path, tmp_path / "out")
    data = read_dataset(tmp_path / "out")
    assert data.meta.data_end == pd.Timestamp("2024-02-01")  # latest created/closed, not an expected date
    assert (data.stage_events["entered_at"] == data.meta.data_end).all()


# ----------------------------------------------------------------------------- repeated snapshots

LATER = pd.DataFrame([
    ["O1", "2024-01-02", "2024-02-01", "Won", "999", "GTX Pro", "ann"],       # closed: never rewritten
    ["O3", "2024-01-10", "2024-03-20", "Won", "310", "GTX Pro", "ann"],       # closed since
    ["O4", "2024-01-15", "2024-05-30", "Qualification", "80", "MG Special", "cat"],  # moved on
    ["O5", "2024-02-01", "2024-05-01", "Proposal", "120", "Zeta", "ann"],     # unchanged
    ["O6", "2024-03-10", "", "Prospecting", "70", "MG Special", "ben"],       # new
    ["O7", "2024-03-12", "2024-06-01", "Proposal", "90", "MG Special", "ben"],  # new, past the first stage
], columns=FACT.columns)


def test_append_builds_a_history_from_successive_exports(star, tmp_path):
    out = tmp_path / "out"
    ingest(star, out)
    first = read_dataset(out)
    later = write_export(tmp_path / "later", LATER, name="m.yaml")
    report = ingest(later, out, append=True, exported_at="2024-04-01")
    data = read_dataset(out)
    deals = data.deals.set_index("deal_id")
    assert set(deals.index) == {"O1", "O2", "O3", "O4", "O5", "O6", "O7"}  # O2 is kept though missing now
    assert deals.loc["O1", "amount"] == 100  # what was known is not rewritten
    assert deals.loc["O3", ["outcome", "closed_at"]].tolist() == ["won", pd.Timestamp("2024-03-20")]
    events = data.stage_events
    new = events.loc[events["entered_at"] == pd.Timestamp("2024-04-01")].set_index("deal_id")
    assert sorted(new.index) == ["O4", "O7"]  # O5 did not change, O6 is new and in the first stage
    assert new.loc["O4", "stage"] == "Qualification"
    assert new.loc["O4", "expected_close_date"] == pd.Timestamp("2024-05-30")
    assert new.loc["O7", ["stage", "expected_close_date"]].tolist() == ["Proposal", pd.Timestamp("2024-06-01")]
    old = events.loc[events["entered_at"] < pd.Timestamp("2024-04-01")].reset_index(drop=True)
    pd.testing.assert_frame_equal(old, first.stage_events.reset_index(drop=True), check_dtype=False)
    assert data.meta.data_end == pd.Timestamp("2024-04-01")
    # before the second export, O4 was still where the first export saw it
    assert deals_at(data, "2024-03-15").set_index("deal_id").loc["O4", "stage"] == "Prospecting"
    assert deals_at(data, "2024-04-01").set_index("deal_id").loc["O4", "stage"] == "Qualification"
    assert "appended: 2 new deals, 1 closed, 2 stage events" in " ".join(report.notes)


def test_append_dates_a_back_dated_close_at_the_export_that_saw_it_open(star, tmp_path):
    ingest(star, tmp_path / "out")
    later = LATER.assign(**{"Close Date": LATER["Close Date"].replace("2024-03-20", "2024-02-15")})
    report = ingest(write_export(tmp_path / "later", later), tmp_path / "out", append=True,
                    exported_at="2024-04-01")
    deals = read_dataset(tmp_path / "out").deals.set_index("deal_id")
    assert deals.loc["O3", "closed_at"] == pd.Timestamp(EXPORTED)
    assert any("closed before a stored export" in n for n in report.notes)


def test_append_refuses_an_older_export(star, tmp_path):
    ingest(star, tmp_path / "out")
    with pytest.raises(MappingError, match=r"^--append: this export \(of 2024-02-20 00:00:00\) is older"):
        ingest(write_export(tmp_path / "later", LATER.iloc[:4]), tmp_path / "out", append=True,
               exported_at="2024-02-20")


def test_append_refuses_another_stage_order(star, tmp_path):
    ingest(star, tmp_path / "out")
    mapping = star_mapping(tmp_path / "later", **{"stages.order": ["Prospecting", "Qualification",
                                                                   "Negotiation", "Proposal"]})
    with pytest.raises(MappingError, match="stage order .* differs"):
        ingest(write_export(tmp_path / "later", LATER, mapping), tmp_path / "out", append=True,
               exported_at="2024-04-01")


def test_append_needs_a_dataset_to_continue(star, tmp_path):
    with pytest.raises(MappingError, match="holds no dataset yet: ingest the first export without --append"):
        ingest(star, tmp_path / "empty", append=True)


def test_cli_ingest_append(star, tmp_path):
    runner = CliRunner()
    out = str(tmp_path / "out")
    assert runner.invoke(app, ["ingest", "--mapping", str(star), "--out", out]).exit_code == 0
    later = write_export(tmp_path / "later", LATER)
    result = runner.invoke(app, ["ingest", "--mapping", str(later), "--out", out, "--append",
                                 "--exported-at", "2024-04-01"])
    assert result.exit_code == 0, result.output
    assert "appended" in result.output
    older = runner.invoke(app, ["ingest", "--mapping", str(write_export(tmp_path / "older", LATER.iloc[:4])),
                                "--out", out, "--append", "--exported-at", "2024-02-20"])
    assert older.exit_code == 2 and "older than the data" in older.output
    assert len(older.output.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- error messages

ERRORS = [
    ({"sources.fact.recode": {"Product": {"case": "lowr"}}},
     "sources.fact.recode.Product.case: 'lowr' is not a case (close matches: lower)"),
    ({"sources.fact.recode": {"Product": {}}}, "sources.fact.recode.Product: nothing to do"),
    ({"tables.deals.join": [{"source": "products", "key": "Product", "columns": ["Series"]},
                            {"source": "teams", "key": "Agent", "columns": ["Series"]}]},
     "tables.deals.join[1].columns: 'Series' is already taken from 'products'"),
    ({"tables.deals.join": [{"source": "fact", "key": "Product", "columns": ["Series"]}]},
     "tables.deals.join.source: 'fact' is the table's own source"),
    ({"tables.deals.join": [{"source": "prodcts", "key": "Product", "columns": ["Series"]}]},
     "tables.deals.join.source: unknown source 'prodcts' (close matches: products)"),
    ({"tables.deals.outcome": {"from": "stage", "source": "teams"}},
     "tables.deals.outcome.source: only an outcome 'from: join' names a source"),
    ({"tables.deals.outcome": {"from": "join"}},
     "tables.deals.outcome.source: with 2 joins, name the one whose rows mean won (one of products, teams)"),
    ({"tables.deals.outcome": {"from": "join", "source": "team"}},
     "tables.deals.outcome.source: 'team' is not joined into deals (close matches: teams)"),
    ({"tables.deals.outcome": {"from": "join", "source": "teams", "close_date_is_expected_while_open": True}},
     "outcome.close_date_is_expected_while_open: with 'from: join'"),
    ({"tables.deals.columns.closed_at": None,
      "tables.deals.outcome": {"from": "column", "column": "Deal Stage", "won": ["Won"], "lost": ["Lost"],
                               "close_date_is_expected_while_open": True}},
     "outcome.close_date_is_expected_while_open needs tables.deals.columns.closed_at"),
    ({"tables.deals.columns.expected_close_date": "Close Date"},
     "tables.deals: map 'expected_close_date' or declare close_date_is_expected_while_open, not both"),
    ({"exported_at": "last tuesday"}, "exported_at: 'last tuesday' is not a date: write YYYY-MM-DD"),
    ({"data_end": "2024-02-01"}, "data_end 2024-02-01 is before exported_at 2024-03-01"),
    ({"static": True}, "exported_at: a static export has no dates"),
]


@pytest.mark.parametrize("changes, message", ERRORS, ids=[m[:40] for _c, m in ERRORS])
def test_mapping_errors_are_one_line_with_a_fix(tmp_path, changes, message):
    path = write_export(tmp_path / "e", mapping=star_mapping(tmp_path / "e", **changes))
    with pytest.raises(MappingError) as err:
        load_mapping(path)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_recode_of_a_missing_column_names_close_matches(tmp_path):
    path = write_export(tmp_path / "e", mapping=star_mapping(tmp_path / "e", **{
        "sources.teams.recode": {"Agnt": {"strip": True}}}))
    with pytest.raises(MappingError, match=r"sources.teams.recode.Agnt: source 'teams' has no column 'Agnt' "
                                           r"\(close matches: Agent\)"):
        ingest(path, tmp_path / "out")


def test_export_date_before_the_data_is_refused(tmp_path):
    path = write_export(tmp_path / "e")
    with pytest.raises(MappingError, match=r"exported_at 2024-01-20 00:00:00 is before the latest created_at"):
        ingest(path, tmp_path / "out", exported_at="2024-01-20")


def test_exported_at_option_must_be_a_date(star, tmp_path):
    with pytest.raises(MappingError, match="exported_at 'soon' is not a date"):
        ingest(star, tmp_path / "out", exported_at="soon")


def test_feature_matrix_before_the_export_does_not_see_the_snapshot_stage(star, tmp_path):
    ingest(star, tmp_path / "out")
    data = read_dataset(tmp_path / "out")
    frame = FeatureBuilder().fit(data).transform(data, ["2024-02-20", EXPORTED]).set_index(["deal_id", "as_of"])
    assert frame.loc[("O3", pd.Timestamp("2024-02-20")), "stage"] == "Prospecting"
    assert frame.loc[("O3", pd.Timestamp(EXPORTED)), "stage"] == "Negotiation"
    assert pd.isna(frame.loc[("O3", pd.Timestamp("2024-02-20")), "days_to_expected_close"])


def test_appending_the_same_export_twice_changes_nothing(tmp_path):
    fact = pd.concat([FACT, FACT.iloc[[0]].assign(**{"Value": "-3", "Opportunity": "O9"})], ignore_index=True)
    path = write_export(tmp_path / "e", fact)
    ingest(path, tmp_path / "out")
    first = read_dataset(tmp_path / "out")
    rejects = pd.read_csv(tmp_path / "out" / "rejects.csv")
    report = ingest(path, tmp_path / "out", append=True)
    again = read_dataset(tmp_path / "out")
    pd.testing.assert_frame_equal(again.deals, first.deals, check_dtype=False)
    pd.testing.assert_frame_equal(again.stage_events, first.stage_events, check_dtype=False)
    assert len(pd.read_csv(tmp_path / "out" / "rejects.csv")) == len(rejects) == 1
    assert "appended: 0 new deals, 0 closed, 0 stage events" in " ".join(report.notes)


def test_shipped_star_crm_mapping(tmp_path, monkeypatch):
    export = tmp_path / "crm_export"
    export.mkdir()
    pd.DataFrame([["P1", "ann", "GTX Pro", "acme", "Won", "2024-01-02", "2024-02-01", "550"],
                  ["P2", "ben", "GTXPro", "acme", "Lost", "2024-01-03", "2024-01-03", "0"],
                  ["P3", "ann", " gtx pro", "zenith", "Engaging", "2024-01-05", "2024-04-01", ""],
                  ["P4", "ann", "MG Special", "nobody", "Prospecting", "2024-02-01", "", ""]],
                 columns=["opportunity_id", "sales_agent", "product", "account", "deal_stage", "engage_date",
                          "close_date", "close_value"]).to_csv(export / "sales_pipeline.csv", index=False)
    pd.DataFrame({"product": ["GTX Pro", "MG Special"], "series": ["GTX", "MG"],
                  "sales_price": [550, 55]}).to_csv(export / "products.csv", index=False)
    pd.DataFrame({"sales_agent": ["ann", "ben"], "manager": ["m1", "m2"],
                  "regional_office": ["East", "West"]}).to_csv(export / "sales_teams.csv", index=False)
    pd.DataFrame({"account": ["acme", "zenith"], "sector": ["retail", "tech"], "employees": [10, 20],
                  "office_location": ["US", "US"]}).to_csv(export / "accounts.csv", index=False)
    monkeypatch.setenv("CRM_EXPORT_DIR", str(export))
    report = ingest(Path(__file__).resolve().parents[2] / "features/mappings/star_crm.yaml", tmp_path / "out")
    assert report.rejects.empty
    data = read_dataset(tmp_path / "out")
    deals = data.deals.set_index("deal_id")
    assert deals["amount"].tolist() == [550, 550, 550, 55]
    assert deals.loc["P3", "series"] == "GTX" and pd.isna(deals.loc["P3", "outcome"])
    assert report.joins.set_index("source").loc["accounts", "examples"] == "nobody"
    assert deals_at(data, data.meta.data_end).set_index("deal_id").loc["P3", "stage"] == "Engaging"


def test_append_with_a_stage_history_adds_the_rows_after_the_stored_data(crm_export, tmp_path):
    mapping = Path(__file__).resolve().parents[2] / "features/mappings/example_crm.yaml"
    ingest(mapping, tmp_path / "out")
    first = read_dataset(tmp_path / "out")
    deals = DEALS.copy()
    deals.loc[deals["Opportunity ID"] == "D2", "Stage"] = "Closed Won"
    new_deal = deals.iloc[[6]].assign(**{"Opportunity ID": "D8", "Created Date": "2024-02-20 09:00"})
    pd.concat([deals, new_deal]).to_csv(crm_export / "deals.csv", index=False)
    later = pd.DataFrame([["D2", "Closed Won", "2024-03-01 10:00", "500", ""],
                          ["D7", "Qualification", "2024-02-25 10:00", "", ""],
                          ["D7", "Prospecting", "2024-02-03 08:00", "", ""]], columns=HISTORY.columns)
    pd.concat([HISTORY, later]).to_csv(crm_export / "stage_history.csv", index=False)
    ACTIVITIES.to_csv(crm_export / "activities.csv", index=False)
    ingest(mapping, tmp_path / "out", append=True, exported_at="2024-03-05")
    data = read_dataset(tmp_path / "out")
    by_id = data.deals.set_index("deal_id")
    assert by_id.loc["D2", ["outcome", "closed_at"]].tolist() == ["won", pd.Timestamp("2024-03-01 10:00")]
    assert "D8" in by_id.index
    events = data.stage_events
    added = events.loc[events["entered_at"] > first.data_end]
    assert added[["deal_id", "stage"]].values.tolist() == [["D7", "Qualification"]]
    assert len(events) == len(first.stage_events) + 1


# ----------------------------------------------------------------------------- analytics of current-state exports

def test_a_current_state_export_says_its_stages_are_snapshots(star, tmp_path):
    ingest(star, tmp_path / "out")
    assert read_dataset(tmp_path / "out").meta.stage_history == "snapshots"


def test_an_export_with_a_stage_history_says_it_is_recorded(crm_export, tmp_path):
    ingest(Path(__file__).resolve().parents[2] / "features/mappings/example_crm.yaml", tmp_path / "history")
    assert read_dataset(tmp_path / "history").meta.stage_history == "recorded"


def test_losses_of_a_current_state_export_are_at_an_unknown_stage_not_the_first(star, tmp_path):
    from features.analytics import pipeline_metrics

    ingest(star, tmp_path / "out")
    m = pipeline_metrics(read_dataset(tmp_path / "out"), EXPORTED)
    funnel = m["total"]["funnel"]
    # O1 (won) and O2 (lost) closed before any export showed their stage
    assert funnel["closed_at_unknown_stage"] == {"won": 1, "lost": 1}
    assert [r["lost"] for r in funnel["losses_by_stage"]] == [0, 0, 0, 0]
    assert all(r["conversion"] is None for r in funnel["stages"])  # the loss could be any stage's
    assert all(r["spells"] == 0 for r in m["total"]["time_in_stage"])  # no stay was observed whole
    assert m["total"]["stalled"]["thresholds_p90_days"] == {}
    assert m["stage_history"] == "snapshots" and not m["stage_history_available"]


def test_appended_exports_give_the_stage_a_deal_was_last_seen_in_when_lost(star, tmp_path):
    from features.analytics import pipeline_metrics

    ingest(star, tmp_path / "out")
    later = LATER.copy()
    later.loc[later["Opportunity"] == "O5", ["Close Date", "Deal Stage"]] = ["2024-03-25", "Lost"]
    ingest(write_export(tmp_path / "later", later), tmp_path / "out", append=True, exported_at="2024-04-01")
    data = read_dataset(tmp_path / "out")
    assert data.meta.stage_history == "snapshots"  # kept by --append
    funnel = pipeline_metrics(data, "2024-04-01")["total"]["funnel"]
    assert {r["stage"]: r["lost"] for r in funnel["losses_by_stage"]}["Proposal"] == 1  # O5, seen there on 03-01
    assert funnel["closed_at_unknown_stage"] == {"won": 1, "lost": 1}  # O1 and O2 still; O3 was seen

"""Ingestion through a YAML mapping: the example CRM export (csv, parquet, SQLite), PII,
joins and outcome rules, every mapping error message, the CLI, and the two real exports."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from features.dataset import read_dataset
from features.errors import MappingError
from features.mapping import load_mapping
from features.schema import Reason
from features.sources import ingest
from serving.cli import app

MAPPINGS = Path(__file__).resolve().parents[2] / "features" / "mappings"
EXAMPLE = yaml.safe_load((MAPPINGS / "example_crm.yaml").read_text())


def write_mapping(tmp_path: Path, mapping: dict, name: str = "mapping.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(mapping, sort_keys=False))
    return path


def rendered(report) -> str:
    console = Console(width=200, record=True, file=open("/dev/null", "w"))
    console.print(report.summary())
    return console.export_text()


def assert_rows_accounted_for(report) -> None:
    counts = report.counts
    assert (counts["rows_in"] == counts["clean"] + counts["rejected"]).all(), counts


# ----------------------------------------------------------------------------- example CRM

def test_example_crm_export_end_to_end(crm_export, tmp_path):
    report = ingest(MAPPINGS / "example_crm.yaml", tmp_path / "out")
    assert_rows_accounted_for(report)
    counts = report.counts.set_index("table")
    assert counts.loc["deals"].tolist() == [7, 4, 3]
    assert counts.loc["stage_events"].tolist() == [10, 7, 3]
    assert counts.loc["activities"].tolist() == [4, 2, 2]
    assert set(map(tuple, report.rejects[["table", "deal_id", "reason"]].values)) == {
        ("deals", "D4", Reason.NEGATIVE_AMOUNT), ("deals", "D5", Reason.UNPARSEABLE_DATE),
        ("deals", "D6", Reason.UNPARSEABLE_NUMBER), ("stage_events", "D4", Reason.DEAL_REJECTED),
        ("stage_events", "D9", Reason.UNKNOWN_DEAL), ("stage_events", "D2", Reason.UNKNOWN_STAGE),
        ("activities", "D9", Reason.UNKNOWN_DEAL), ("activities", "D1", Reason.EVENT_BEFORE_CREATE)}

    data = read_dataset(tmp_path / "out")
    deals = data.deals.set_index("deal_id")
    assert deals.loc["D1", ["outcome", "closed_at"]].tolist() == ["won", pd.Timestamp("2024-02-01 12:00")]
    assert deals.loc["D3", ["outcome", "closed_at"]].tolist() == ["lost", pd.Timestamp("2024-02-15 08:00")]
    assert pd.isna(deals.loc["D2", "outcome"]) and pd.isna(deals.loc["D2", "closed_at"])
    assert deals.loc["D2", "stage"] == "Negotiation" and pd.isna(deals.loc["D1", "stage"])
    # won/lost rows of the history became outcomes; only open stages remain as stage rows
    assert set(data.stage_events["stage"]) <= {"Prospecting", "Qualification", "Proposal", "Negotiation"}
    assert len(data.stage_events) == 5
    d1_events = data.stage_events[data.stage_events["deal_id"] == "D1"]
    assert d1_events["expected_close_date"].tolist() == [pd.Timestamp("2024-03-01"), pd.Timestamp("2024-03-15")]
    assert data.meta.stages == ["Prospecting", "Qualification", "Proposal", "Negotiation"]
    assert data.meta.attributes == {"industry": "categorical", "employees": "numeric"}
    assert data.accounts is None and not (tmp_path / "out" / "accounts.parquet").exists()
    rejects_csv = pd.read_csv(tmp_path / "out" / "rejects.csv")
    assert len(rejects_csv) == len(report.rejects) == 8
    text = rendered(report)
    assert "unparseable_number" in text and "won 1" in text and "became deals.outcome" in text


def test_placeholders_become_empty(crm_export, tmp_path):
    ingest(MAPPINGS / "example_crm.yaml", tmp_path / "out")
    deals = read_dataset(tmp_path / "out").deals.set_index("deal_id")
    assert pd.isna(deals.loc["D3", "source"])  # "-"
    assert pd.isna(deals.loc["D7", "region"])  # "n/a"
    assert pd.isna(deals.loc["D7", "amount"])  # empty cell


def test_pii_reaches_no_output(crm_export, tmp_path, pii_values):
    report = ingest(MAPPINGS / "example_crm.yaml", tmp_path / "out")
    outputs = list((tmp_path / "out").iterdir())
    assert {p.name for p in outputs} >= {"deals.parquet", "stage_events.parquet", "rejects.csv", "meta.json"}
    for table in ("deals", "stage_events", "activities"):
        frame = pd.read_parquet(tmp_path / "out" / f"{table}.parquet")
        assert not {"Contact Name", "Contact Email", "Contact Phone"} & set(frame.columns)
        assert not frame.astype(str).isin(pii_values).any().any()
    texts = [p.read_bytes() for p in outputs] + [rendered(report).encode(), report.rejects.to_csv().encode()]
    for value in pii_values:
        assert not any(value.encode() in t for t in texts), value


def test_sql_source_on_sqlite(crm_export, tmp_path, export_deals, pii_values):
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'crm.db'}")
    export_deals.to_sql("opportunities", engine, index=False)
    engine.dispose()
    mapping = copy.deepcopy(EXAMPLE)
    mapping["sources"]["deals"] = {"type": "sql", "url": "sqlite:///${DB_DIR}/crm.db",
                                   "query": 'SELECT * FROM opportunities WHERE "Owner" != \'cat\''}
    path = write_mapping(tmp_path, mapping)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DB_DIR", str(tmp_path))
        report = ingest(path, tmp_path / "out")
    assert report.counts.set_index("table").loc["deals"].tolist() == [5, 3, 2]  # D6, D7 filtered out by SQL
    assert_rows_accounted_for(report)
    deals = read_dataset(tmp_path / "out").deals
    assert sorted(deals["deal_id"]) == ["D1", "D2", "D3"]
    assert not any(v.encode() in (tmp_path / "out" / "deals.parquet").read_bytes() for v in pii_values)


def test_parquet_source(crm_export, tmp_path, export_deals):
    export_deals.to_parquet(tmp_path / "deals.parquet", index=False)
    mapping = copy.deepcopy(EXAMPLE)
    mapping["sources"]["deals"] = {"type": "parquet", "path": str(tmp_path / "deals.parquet")}
    report = ingest(write_mapping(tmp_path, mapping), tmp_path / "out")
    assert report.counts.set_index("table").loc["deals"].tolist() == [7, 4, 3]


def test_relative_paths_resolve_against_the_working_directory(crm_export, tmp_path, monkeypatch):
    monkeypatch.delenv("CRM_EXPORT_DIR")
    monkeypatch.chdir(crm_export.parent)
    (crm_export.parent / "export").rename(crm_export.parent / "crm_export")  # the mapping's default
    report = ingest(MAPPINGS / "example_crm.yaml", "out")
    assert (crm_export.parent / "out" / "deals.parquet").exists() and len(report.counts) == 3


# ----------------------------------------------------------------------------- joins and outcomes

def funnel(tmp_path: Path, leads: list, closed: list, **outcome) -> Path:
    """A tiny leads + closed-deals export and its mapping (outcome from the join)."""
    pd.DataFrame(leads, columns=["lead", "first_contact"]).to_csv(tmp_path / "leads.csv", index=False)
    pd.DataFrame(closed, columns=["lead", "won_at", "revenue"]).to_csv(tmp_path / "closed.csv", index=False)
    mapping = {
        "name": "funnel", "stages": {"order": ["lead"]},
        "sources": {"leads": {"type": "csv", "path": str(tmp_path / "leads.csv")},
                    "closed": {"type": "csv", "path": str(tmp_path / "closed.csv")}},
        "tables": {"deals": {
            "source": "leads", "join": {"source": "closed", "key": "lead", "columns": ["won_at"]},
            "columns": {"deal_id": "lead", "created_at": "first_contact", "closed_at": "won_at"},
            "date_formats": {"created_at": "%d-%m-%Y", "closed_at": "%d-%m-%Y %H:%M"},
            "outcome": {"from": "join", **outcome}}}}
    return write_mapping(tmp_path, mapping)


def test_join_outcome_won_open_and_lost_after_n_days(tmp_path):
    leads = [["a", "01-01-2024"], ["b", "01-01-2024"], ["c", "20-03-2024"], ["d", "05-01-2024"]]
    closed = [["a", "10-01-2024 09:30", 5], ["d", "01-04-2024 12:00", 1], ["e", "01-04-2024 12:00", 1]]
    report = ingest(funnel(tmp_path, leads, closed, lost_after_days=60), tmp_path / "out")
    deals = read_dataset(tmp_path / "out").deals.set_index("deal_id")
    assert deals.loc["a", ["outcome", "closed_at"]].tolist() == ["won", pd.Timestamp("2024-01-10 09:30")]
    # b: no close row, 60 days passed before the data end (2024-04-01 12:00) -> lost at day 60
    assert deals.loc["b", ["outcome", "closed_at"]].tolist() == ["lost", pd.Timestamp("2024-03-01")]
    assert pd.isna(deals.loc["c", "outcome"])  # only 12 days old at the data end: still open
    assert deals.loc["d", "outcome"] == "won"  # a close row wins even after the 60 days
    assert "revenue" not in deals.columns  # closed-deal columns are not brought in
    assert read_dataset(tmp_path / "out").meta.data_end == pd.Timestamp("2024-04-01 12:00")
    # e closes a lead that does not exist: a reject of the joined file, not a silent drop
    counts = report.counts.set_index("table")
    assert counts.loc["closed (joined into deals)"].tolist() == [3, 2, 1]
    assert report.rejects.set_index("deal_id").loc["e", "reason"] == Reason.UNKNOWN_DEAL
    assert_rows_accounted_for(report)


def test_join_duplicates_and_close_before_create_are_rejects(tmp_path):
    leads = [["a", "01-01-2024"], ["b", "10-01-2024"]]
    closed = [["a", "10-01-2024 09:30", 5], ["a", "11-01-2024 09:30", 5], ["b", "09-01-2024 10:00", 1]]
    report = ingest(funnel(tmp_path, leads, closed), tmp_path / "out")
    reasons = set(map(tuple, report.rejects[["table", "deal_id", "reason"]].values))
    assert reasons == {("closed", "a", Reason.DUPLICATE_ID), ("deals", "b", Reason.CLOSE_BEFORE_CREATE)}
    assert_rows_accounted_for(report)


def test_outcome_from_a_column_normalises_numbers_and_rejects_unknown_values(tmp_path):
    pd.DataFrame({"id": ["a", "b", "c", "d"], "Converted": ["1.0", "0", "", "maybe"]}).to_csv(
        tmp_path / "leads.csv", index=False)
    mapping = {"static": True, "stages": {"order": ["lead"]},
               "sources": {"leads": {"type": "csv", "path": str(tmp_path / "leads.csv")}},
               "tables": {"deals": {"source": "leads", "columns": {"deal_id": "id"},
                                    "outcome": {"from": "column", "column": "Converted", "won": [1], "lost": [0]}}}}
    report = ingest(write_mapping(tmp_path, mapping), tmp_path / "out")
    deals = read_dataset(tmp_path / "out").deals.set_index("deal_id")
    assert deals.loc["a", "outcome"] == "won" and deals.loc["b", "outcome"] == "lost"
    assert pd.isna(deals.loc["c", "outcome"])
    assert report.rejects[["deal_id", "reason"]].values.tolist() == [["d", Reason.INVALID_OUTCOME]]


def test_outcome_from_stage_history_alone(crm_export, tmp_path):
    mapping = copy.deepcopy(EXAMPLE)
    del mapping["tables"]["deals"]["columns"]["stage"]
    report = ingest(write_mapping(tmp_path, mapping), tmp_path / "out")
    deals = read_dataset(tmp_path / "out").deals.set_index("deal_id")
    assert deals["outcome"].fillna("open").to_dict() == {"D1": "won", "D2": "open", "D3": "lost", "D7": "open"}
    assert deals.loc["D1", "closed_at"] == pd.Timestamp("2024-02-01 12:00")
    assert_rows_accounted_for(report)


# ----------------------------------------------------------------------------- mapping errors

def mutate(path: tuple, value):
    def apply(m: dict) -> dict:
        node = m
        for key in path[:-1]:
            node = node[key]
        if value is DELETE:
            del node[path[-1]]
        else:
            node[path[-1]] = value
        return m
    return apply


DELETE = object()
MAPPING_ERRORS = [
    ("unknown source column", mutate(("tables", "deals", "columns", "created_at"), "Created Dat"),
     r"tables\.deals\.columns\.created_at: source 'deals' has no column 'Created Dat' \(close matches: Created Date"),
    ("bad date format", mutate(("tables", "deals", "date_format"), "%m/%d/%Y"),
     r"tables\.deals\.created_at: format '%m/%d/%Y' does not fit column 'Created Date' \(e\.g\. '2024-01-05 09:00'\): "
     r"7 of 7 values failed, most of the column"),
    ("missing won stage", mutate(("stages", "won"), []), r"outcome from stage needs stages\.won"),
    ("won stage not present", mutate(("stages", "won"), ["Won"]),
     r"stages\.won: none of \['Won'\] occurs in the deals' stage column or stage_events \(values seen: .*Closed Won"),
    ("unknown source name", mutate(("tables", "stage_events", "source"), "histroy"),
     r"tables\.stage_events\.source: unknown source 'histroy' \(close matches: history\)"),
    ("missing file", mutate(("sources", "activities", "path"), "/nonexistent/acts.csv"),
     r"sources\.activities: file not found: /nonexistent/acts\.csv"),
    ("unknown canonical column", mutate(("tables", "deals", "columns", "create_at"), "Created Date"),
     r"'create_at' is not a canonical column of deals \(close matches: created_at"),
    ("pii also mapped", mutate(("tables", "deals", "attributes", "email"), {"column": "Contact Email", "kind": "categorical"}),
     r"column 'Contact Email' is listed under 'pii' and also mapped"),
    ("attribute not snake_case", mutate(("tables", "deals", "attributes", "Head Count"), {"column": "Employees", "kind": "numeric"}),
     r"name 'Head Count' must be snake_case .* e\.g\. 'head_count'"),
    ("bad kind", mutate(("tables", "deals", "attributes", "industry", "kind"), "text"),
     r"tables\.deals\.attributes\.industry\.kind: Input should be 'categorical' or 'numeric'"),
    ("env var unset", mutate(("sources", "deals", "path"), "${NO_SUCH_VAR_XYZ}/deals.csv"),
     r"sources\.deals\.path uses \$\{NO_SUCH_VAR_XYZ\} but NO_SUCH_VAR_XYZ is not set"),
    ("no deals table", mutate(("tables", "deals"), DELETE), r"no 'tables\.deals' section"),
]


@pytest.mark.parametrize("change, message", [c[1:] for c in MAPPING_ERRORS], ids=[c[0] for c in MAPPING_ERRORS])
def test_wrong_mapping_gives_one_line_error_naming_the_problem(crm_export, tmp_path, change, message):
    path = write_mapping(tmp_path, change(copy.deepcopy(EXAMPLE)))
    with pytest.raises(MappingError, match=message) as info:
        ingest(path, tmp_path / "out")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_won_value_absent_from_outcome_column(tmp_path):
    pd.DataFrame({"id": ["a", "b"], "Converted": ["0", "0"]}).to_csv(tmp_path / "leads.csv", index=False)
    mapping = {"static": True, "stages": {"order": ["lead"]},
               "sources": {"leads": {"type": "csv", "path": str(tmp_path / "leads.csv")}},
               "tables": {"deals": {"source": "leads", "columns": {"deal_id": "id"},
                                    "outcome": {"from": "column", "column": "Converted", "won": [1]}}}}
    with pytest.raises(MappingError, match=r"outcome\.won: value\(s\) \[1\] never occur in column 'Converted' "
                                           r"\(values seen: 0\)"):
        ingest(write_mapping(tmp_path, mapping), tmp_path / "out")


def test_unreadable_yaml(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nsources:\n  a: [unclosed\n")
    with pytest.raises(MappingError, match=r"is not readable YAML at line \d+, column \d+"):
        load_mapping(path)


def test_a_few_bad_dates_are_rejects_but_most_bad_is_an_error(tmp_path):
    rows = [["a", "01-02-2024"], ["b", "2024-02-01"], ["c", "03-02-2024"]]
    pd.DataFrame(rows, columns=["id", "day"]).to_csv(tmp_path / "leads.csv", index=False)
    mapping = {"stages": {"order": ["lead"]},
               "sources": {"leads": {"type": "csv", "path": str(tmp_path / "leads.csv")}},
               "tables": {"deals": {"source": "leads", "columns": {"deal_id": "id", "created_at": "day"},
                                    "date_format": "%d-%m-%Y"}}}
    report = ingest(write_mapping(tmp_path, mapping), tmp_path / "out")
    assert report.rejects[["deal_id", "reason", "detail"]].values.tolist() == [
        ["b", Reason.UNPARSEABLE_DATE, "created_at=2024-02-01 (not %d-%m-%Y)"]]
    assert read_dataset(tmp_path / "out").deals["created_at"].tolist() == [pd.Timestamp("2024-02-01"),
                                                                           pd.Timestamp("2024-02-03")]
    mapping["tables"]["deals"]["date_format"] = "%Y-%m-%d"
    with pytest.raises(MappingError, match="2 of 3 values failed, most of the column"):
        ingest(write_mapping(tmp_path, mapping), tmp_path / "out2")


# ----------------------------------------------------------------------------- CLI

def test_cli_prints_a_wrong_mapping_as_one_line(crm_export, tmp_path):
    path = write_mapping(tmp_path, mutate(("tables", "deals", "columns", "owner"), "Onwer")(copy.deepcopy(EXAMPLE)))
    result = CliRunner().invoke(app, ["ingest", "--mapping", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "no column 'Onwer'" in lines[0] and "close matches: Owner" in lines[0]
    assert "Traceback" not in result.output


def test_cli_ingest_prints_the_summary(crm_export, tmp_path, pii_values):
    result = CliRunner().invoke(app, ["ingest", "--mapping", str(MAPPINGS / "example_crm.yaml"),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "rows read" in result.output and "negative_amount" in result.output
    assert not any(v in result.output for v in pii_values)


# ----------------------------------------------------------------------------- real exports

def test_olist_funnel(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("LEADSCORE_SHARED_DATA", str(shared_data))
    report = ingest(MAPPINGS / "olist.yaml", tmp_path / "olist")
    assert_rows_accounted_for(report)
    counts = report.counts.set_index("table")
    assert counts.loc["deals"].tolist() == [8000, 7999, 1]
    assert counts.loc["closed_deals (joined into deals)"].tolist() == [842, 842, 0]
    # the negative-duration rows, counted independently from the raw files
    mql = pd.read_csv(shared_data / "olist-funnel/olist_marketing_qualified_leads_dataset.csv")
    won = pd.read_csv(shared_data / "olist-funnel/olist_closed_deals_dataset.csv")
    both = mql.merge(won, on="mql_id")
    negative = (pd.to_datetime(both["won_date"], format="%d-%m-%Y %H:%M")
                < pd.to_datetime(both["first_contact_date"], format="%d-%m-%Y"))
    rejected = report.rejects[report.rejects["reason"] == Reason.CLOSE_BEFORE_CREATE]
    assert len(rejected) == int(negative.sum()) == 1
    assert set(rejected["deal_id"]) == set(both.loc[negative, "mql_id"])

    data = read_dataset(tmp_path / "olist")
    assert data.deals["outcome"].value_counts().to_dict() == {"lost": 6702, "won": 841} | {}
    assert data.deals["outcome"].isna().sum() == 456
    assert data.deals["created_at"].min() == pd.Timestamp("2017-06-14")  # day-first read correctly
    closed_only = {"seller_id", "sdr_id", "sr_id", "business_segment", "lead_type", "lead_behaviour_profile",
                   "has_company", "has_gtin", "average_stock", "business_type",
                   "declared_product_catalog_size", "declared_monthly_revenue", "won_date"}
    assert not closed_only & set(data.deals.columns)
    assert data.deals["amount"].isna().all()
    assert data.meta.attributes == {"landing_page_id": "categorical"} and data.meta.stages == ["mql"]
    lost = data.deals[data.deals["outcome"] == "lost"]
    assert ((lost["closed_at"] - lost["created_at"]) == pd.Timedelta(days=180)).all()


def test_olist_mangled_cells_are_rejects_not_crashes(shared_data, tmp_path, monkeypatch):
    # average_stock must never be a feature (it exists only for won leads); mapped as a
    # number anyway, its spreadsheet-mangled cells ('01-May') are rejected with a reason
    monkeypatch.setenv("LEADSCORE_SHARED_DATA", str(shared_data))
    mapping = yaml.safe_load((MAPPINGS / "olist.yaml").read_text())
    mapping["tables"]["deals"]["join"]["columns"].append("average_stock")
    mapping["tables"]["deals"]["attributes"]["average_stock"] = {"column": "average_stock", "kind": "numeric"}
    report = ingest(write_mapping(tmp_path, mapping), tmp_path / "out")
    assert_rows_accounted_for(report)
    bad = report.rejects[report.rejects["reason"] == Reason.UNPARSEABLE_NUMBER]
    closed = pd.read_csv(shared_data / "olist-funnel/olist_closed_deals_dataset.csv", dtype=str)
    assert len(bad) == closed["average_stock"].notna().sum() == 66  # ranges ('5-20') or mangled ('May-20')
    assert bad["detail"].str.contains("01-May").any()


@pytest.mark.parametrize("name, n_attributes", [("x_education", 33), ("x_education_no_leaky", 25)])
def test_x_education(shared_data, tmp_path, monkeypatch, name, n_attributes):
    monkeypatch.setenv("LEADSCORE_SHARED_DATA", str(shared_data))
    report = ingest(MAPPINGS / f"{name}.yaml", tmp_path / name)
    raw = pd.read_csv(shared_data / "x-education/Leads.csv")
    assert report.counts.set_index("table").loc["deals"].tolist() == [len(raw), len(raw), 0]
    data = read_dataset(tmp_path / name)
    assert data.meta.static and len(data.meta.attributes) == n_attributes
    deals = data.deals
    assert deals["outcome"].eq("won").sum() == raw["Converted"].sum()
    assert not (deals.select_dtypes("string") == "Select").any().any()
    assert "lead_number" not in deals.columns and deals["deal_id"].is_unique
    kinds = data.meta.attributes
    assert kinds["total_time_spent_on_website"] == "numeric" and kinds["lead_origin"] == "categorical"
    assert deals["total_visits"].dtype == "float64"
    leaky = {"tags", "lead_quality", "lead_profile", "last_notable_activity", "asymmetrique_activity_index",
             "asymmetrique_profile_index", "asymmetrique_activity_score", "asymmetrique_profile_score"}
    present = leaky & set(deals.columns)
    assert present == (leaky if name == "x_education" else set())
    assert json.loads((tmp_path / name / "meta.json").read_text())["static"] is True

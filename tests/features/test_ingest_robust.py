"""Ingestion loses nothing (issue 14): malformed CSV lines, contradicting history rows,
implausible dates and amounts are rejects with reasons; rows in = clean + rejected always;
a PII canary of a malformed row reaches no output file; dataset writes are atomic."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from features.csv_rows import MALFORMED_ROW, read_csv_rows
from features.dataset import read_dataset, write_dataset
from features.errors import MappingError
from features.schema import Reason
from features.sources import ingest

MAPPINGS = Path(__file__).resolve().parents[2] / "features" / "mappings"
CANARY = "CANARY-7f3a9c"  # a unique string in a declared PII column of a malformed row
HEADER = "Opportunity ID,Created Date,Stage,Amount,Owner,Region,Lead Source,Industry,Employees,Account ID," \
         "Contact Name,Contact Email,Contact Phone"
GOOD = [
    "D1,2024-01-05 09:00,Closed Won,1000,ann,EU,web,saas,50,A1,Jane Doe,jane@example.com,+44 1",
    "D2,2024-01-10 10:00,Negotiation,500,ben,US,event,retail,120,A2,Bob Roe,bob@example.com,+44 2",
    "D3,2024-01-12 11:00,Closed Lost,200,ann,EU,web,saas,8,A1,Jane Doe,jane@example.com,+44 3",
    "D4,2024-01-15 09:30,Proposal,300,ben,US,web,retail,30,A2,Bob Roe,bob@example.com,+44 4",
]
HISTORY = ["Opportunity ID,Stage,Changed At,Amount,Expected Close",
           "D1,Prospecting,2024-01-05 09:00,1000,",
           "D1,Closed Won,2024-02-01 12:00,1000,",
           "D2,Prospecting,2024-01-10 10:00,500,",
           "D3,Prospecting,2024-01-12 11:00,200,",
           "D3,Closed Lost,2024-02-15 08:00,200,",
           "D4,Prospecting,2024-01-15 09:30,300,"]
ACTIVITIES = ["Opportunity ID,Activity Type,Activity Date", "D1,call,2024-01-06 10:00"]


def export(tmp_path: Path, monkeypatch, deals: list[str], history: list[str] = HISTORY,
           mapping_changes: dict | None = None) -> Path:
    """Write the export files and a copy of example_crm.yaml (with changes); returns the mapping."""
    folder = tmp_path / "export"
    folder.mkdir(exist_ok=True)
    (folder / "deals.csv").write_text("\n".join([HEADER, *deals]) + "\n")
    (folder / "stage_history.csv").write_text("\n".join(history) + "\n")
    (folder / "activities.csv").write_text("\n".join(ACTIVITIES) + "\n")
    monkeypatch.setenv("CRM_EXPORT_DIR", str(folder))
    mapping = yaml.safe_load((MAPPINGS / "example_crm.yaml").read_text())
    mapping.update(mapping_changes or {})
    path = tmp_path / "mapping.yaml"
    path.write_text(yaml.safe_dump(mapping, sort_keys=False))
    return path


def ingested(tmp_path: Path, monkeypatch, deals: list[str], **kwargs):
    report = ingest(export(tmp_path, monkeypatch, deals, **kwargs), tmp_path / "out")
    counts = report.counts
    assert (counts["rows_in"] == counts["clean"] + counts["rejected"]).all(), counts
    return report


def reasons(report, table: str) -> dict[str, str]:
    rejects = report.rejects.loc[report.rejects["table"] == table]
    return dict(zip(rejects["reason"] + "@" + rejects["row"].astype(str), rejects["detail"]))


def assert_canary_nowhere(folder: Path) -> None:
    """The canary is in no file of the dataset folder: parquet tables read back, text raw."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert files
    for path in files:
        if path.suffix == ".parquet":
            text = pd.read_parquet(path).astype(str).to_csv()
        else:
            text = path.read_text(errors="replace")
        assert CANARY not in text, path


# ----------------------------------------------------------------------------- malformed lines

def test_a_stray_quote_rejects_its_line_and_swallows_nothing(tmp_path, monkeypatch):
    stray = f'D5,2024-01-20 10:00,Proposal,"250,cat,EU,web,saas,10,A3,{CANARY} Doe,c@x.com,+44 5'
    quoted = 'D6,2024-01-21 10:00,Proposal,700,"dan, jr",EU,web,saas,10,A3,Dan "D" Poe,d@x.com,+44 6'
    report = ingested(tmp_path, monkeypatch, GOOD[:2] + [stray] + GOOD[2:] + [quoted])
    counts = report.counts.set_index("table")
    assert counts.loc["deals"].tolist() == [6, 5, 1]  # every line is a row or a reject
    assert reasons(report, "deals") == {f"{MALFORMED_ROW}@2": "line 4: a quote is left open or misplaced"}
    deals = read_dataset(tmp_path / "out").deals.set_index("deal_id")
    assert sorted(deals.index) == ["D1", "D2", "D3", "D4", "D6"]
    assert deals.loc["D6", "owner"] == "dan, jr" and deals.loc["D4", "owner"] == "ben"
    assert_canary_nowhere(tmp_path / "out")


@pytest.mark.parametrize("line, fields", [
    (f"D5,2024-01-20 10:00,Proposal,250,cat,EU,web,saas,10,A3,{CANARY},c@x.com,+44 5,EXTRA", 14),
    (f"D5,2024-01-20 10:00,Proposal,250,cat,EU,web,saas,10,{CANARY},c@x.com,+44 5", 12),
], ids=["extra trailing field", "missing field"])
def test_a_wrong_field_count_is_a_reject_with_its_line(tmp_path, monkeypatch, line, fields):
    report = ingested(tmp_path, monkeypatch, GOOD + [line])
    assert reasons(report, "deals") == {f"{MALFORMED_ROW}@4": f"line 6: {fields} fields, the header has 13"}
    assert report.rejects["deal_id"].isna().all()  # the row cannot be split: not even its id
    assert_canary_nowhere(tmp_path / "out")


def test_rows_after_a_malformed_line_keep_their_line_numbers(tmp_path, monkeypatch):
    negative = "D7,2024-01-22 10:00,Proposal,-5,ann,EU,web,saas,10,A3,X,x@x.com,+44 7"
    report = ingested(tmp_path, monkeypatch, GOOD[:1] + ["D5,too,few", "", negative] + GOOD[1:])
    assert reasons(report, "deals") == {f"{MALFORMED_ROW}@1": "line 3: 3 fields, the header has 13",
                                        f"{Reason.NEGATIVE_AMOUNT}@3": "amount=-5.0"}  # line 5 (after a blank)


def test_a_malformed_history_line_is_a_stage_events_reject(tmp_path, monkeypatch):
    history = HISTORY + ['D4,Proposal,"2024-01-20 10:00,300,']
    report = ingested(tmp_path, monkeypatch, GOOD, history=history)
    assert reasons(report, "stage_events") == {f"{MALFORMED_ROW}@6": "line 8: a quote is left open or misplaced"}


def test_multiline_values_when_the_source_declares_them(tmp_path, monkeypatch):
    note = 'D5,2024-01-20 10:00,Proposal,250,"cat\nthe second",EU,web,saas,10,A3,X,x@x.com,+44 5'
    path = export(tmp_path, monkeypatch, GOOD + [note])
    assert len(read_dataset_of(ingest(path, tmp_path / "one")).loc[lambda d: d.deal_id == "D5"]) == 0
    mapping = yaml.safe_load(path.read_text())
    mapping["sources"]["deals"]["multiline_values"] = True
    path.write_text(yaml.safe_dump(mapping, sort_keys=False))
    deals = read_dataset_of(ingest(path, tmp_path / "two")).set_index("deal_id")
    assert deals.loc["D5", "owner"] == "cat\nthe second"


def read_dataset_of(report) -> pd.DataFrame:
    return read_dataset(report.out_dir).deals


def test_line_changing_reader_options_are_refused(tmp_path, monkeypatch):
    path = export(tmp_path, monkeypatch, GOOD)
    mapping = yaml.safe_load(path.read_text())
    mapping["sources"]["deals"]["options"] = {"skiprows": 1}
    path.write_text(yaml.safe_dump(mapping, sort_keys=False))
    with pytest.raises(MappingError, match="sources.deals.options.skiprows: not supported"):
        ingest(path, tmp_path / "out")


# ----------------------------------------------------------------------------- contradictions

def test_history_rows_that_contradict_the_deal_outcome_are_rejects(tmp_path, monkeypatch):
    history = HISTORY + ["D2,Closed Won,2024-02-20 10:00,500,",   # D2's stage says open
                         "D3,Closed Won,2024-02-10 10:00,200,"]   # D3 says lost
    report = ingested(tmp_path, monkeypatch, GOOD, history=history)
    got = report.rejects.loc[report.rejects["reason"] == Reason.CONTRADICTS_OUTCOME]
    assert got[["deal_id", "row"]].values.tolist() == [["D2", 6], ["D3", 7]]
    assert "the deal's outcome is open" in got["detail"].iloc[0]
    deals = read_dataset(tmp_path / "out").deals.set_index("deal_id")
    assert pd.isna(deals.loc["D2", "outcome"])
    assert deals.loc["D3", ["outcome", "closed_at"]].tolist() == ["lost", pd.Timestamp("2024-02-15 08:00")]


# ----------------------------------------------------------------------------- implausible values

def test_implausible_dates_are_rejects_and_never_the_data_end(tmp_path, monkeypatch):
    history = HISTORY + ["D4,Proposal,9999-12-31 00:00,300,"]
    old = "D5,1970-01-01 00:00,Proposal,250,cat,EU,web,saas,10,A3,X,x@x.com,+44 5"
    report = ingested(tmp_path, monkeypatch, GOOD + [old], history=history)
    assert set(report.rejects["reason"]) == {Reason.DATE_OUT_OF_RANGE}
    assert report.rejects["deal_id"].tolist() == ["D5", "D4"]
    data = read_dataset(tmp_path / "out")
    assert data.meta.data_end == pd.Timestamp("2024-02-15 08:00")  # the latest clean time


@pytest.mark.parametrize("amount", ["inf", "1e400", "-inf", "2e12"])
def test_infinite_or_absurd_amounts_are_rejects(tmp_path, monkeypatch, amount):
    line = f"D5,2024-01-20 10:00,Proposal,{amount},cat,EU,web,saas,10,A3,X,x@x.com,+44 5"
    report = ingested(tmp_path, monkeypatch, GOOD + [line])
    reason = Reason.NEGATIVE_AMOUNT if amount.startswith("-") else Reason.NUMBER_OUT_OF_RANGE
    assert report.rejects[["deal_id", "reason"]].values.tolist() == [["D5", reason]]
    assert (read_dataset(tmp_path / "out").deals["amount"].abs() < 1e12).all()


def test_infinite_numeric_attribute_is_a_reject(tmp_path, monkeypatch):
    line = "D5,2024-01-20 10:00,Proposal,250,cat,EU,web,saas,inf,A3,X,x@x.com,+44 5"
    report = ingested(tmp_path, monkeypatch, GOOD + [line])
    assert report.rejects[["deal_id", "reason"]].values.tolist() == [["D5", Reason.NUMBER_OUT_OF_RANGE]]


def test_the_plausible_window_and_bounds_are_configurable(tmp_path, monkeypatch):
    changes = {"plausible": {"earliest": "2024-01-11", "latest": "2030-01-01", "max_amount": 600}}
    report = ingested(tmp_path, monkeypatch, GOOD, mapping_changes=changes)
    deal_rejects = report.rejects.loc[report.rejects["table"] == "deals"]
    assert deal_rejects[["deal_id", "reason"]].values.tolist() == [
        ["D1", Reason.DATE_OUT_OF_RANGE], ["D2", Reason.DATE_OUT_OF_RANGE]]
    changes = {"plausible": {"earliest": "2024-01-11", "max_amount": 100}}
    report = ingested(tmp_path, monkeypatch, GOOD, mapping_changes=changes)
    assert set(report.rejects.loc[report.rejects["table"] == "deals", "reason"]) == {
        Reason.DATE_OUT_OF_RANGE, Reason.NUMBER_OUT_OF_RANGE}


def test_a_bad_plausible_window_is_one_line(tmp_path, monkeypatch):
    path = export(tmp_path, monkeypatch, GOOD, mapping_changes={"plausible": {"earliest": "2040-01-01"}})
    with pytest.raises(MappingError, match="plausible: earliest 2040-01-01 is not before latest"):
        ingest(path, tmp_path / "out")


# ----------------------------------------------------------------------------- atomic writes

def fail_on_second_table(monkeypatch) -> None:
    calls = []
    real = pd.DataFrame.to_parquet

    def flaky(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", flaky)


def test_a_write_failing_half_way_leaves_the_old_dataset(tmp_path, monkeypatch):
    ingested(tmp_path, monkeypatch, GOOD)
    out = tmp_path / "out"
    (out / "truth").mkdir()
    (out / "truth" / "keep.txt").write_text("mine")
    before = read_dataset(out)
    bigger = before.deals.iloc[:2]
    fail_on_second_table(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        write_dataset(type(before)(deals=bigger, meta=before.meta, stage_events=before.stage_events), out)
    after = read_dataset(out)
    pd.testing.assert_frame_equal(after.deals, before.deals)
    pd.testing.assert_frame_equal(after.stage_events, before.stage_events)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "mapping.yaml", "out"]  # no leftovers
    monkeypatch.undo()
    write_dataset(type(before)(deals=bigger, meta=before.meta), out)
    assert len(read_dataset(out).deals) == 2 and read_dataset(out).stage_events is None
    assert (out / "truth" / "keep.txt").read_text() == "mine"  # other entries are carried over


def test_an_append_failing_half_way_leaves_the_old_dataset(tmp_path, monkeypatch):
    path = export(tmp_path, monkeypatch, GOOD)
    ingest(path, tmp_path / "out", exported_at="2024-03-01")
    before = read_dataset(tmp_path / "out")
    fail_on_second_table(monkeypatch)
    with pytest.raises(OSError):
        ingest(path, tmp_path / "out", append=True, exported_at="2024-04-01")
    pd.testing.assert_frame_equal(read_dataset(tmp_path / "out").deals, before.deals)


def test_a_crash_between_the_renames_is_recovered(tmp_path, monkeypatch):
    ingested(tmp_path, monkeypatch, GOOD)
    out = tmp_path / "out"
    before = read_dataset(out)
    out.rename(tmp_path / ".out.previous")  # the old folder moved aside, the new one not yet in place
    pd.testing.assert_frame_equal(read_dataset(out).deals, before.deals)


# ----------------------------------------------------------------------------- the reader itself

def random_rows(rng, n: int) -> list[list[str]]:
    alphabet = list('ab ,"xyz;é') + ["", "''"]
    return [[f"R{i}"] + ["".join(rng.choice(alphabet, size=rng.integers(0, 6))) for _ in range(3)]
            for i in range(n)]


@pytest.mark.parametrize("seed", range(5))
def test_well_formed_files_read_as_pandas_reads_them(tmp_path, seed):
    import csv

    import numpy as np

    rows = random_rows(np.random.default_rng(seed), 300)
    path = tmp_path / "f.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f, lineterminator="\r\n" if seed % 2 else "\n").writerows([["id", "a", "b", "c"], *rows])
    got = read_csv_rows(path, ["id", "a", "c"], {}, "sources.f")
    expected = pd.read_csv(path, usecols=["id", "a", "c"], dtype=str, keep_default_na=False, na_values=[""])
    assert got.rejects.empty
    pd.testing.assert_frame_equal(got.frame.reset_index(drop=True), expected)
    assert got.frame.index.tolist() == list(range(300))


def test_only_the_broken_lines_are_left_out(tmp_path):
    lines = ["id,a,b", "R0,1,2", 'R1,"open,3', "R2,x\"y,4", 'R3,"q, ""r""",5', "R4,1,2,3", "R5,1", 'R6,"a"b,1',
             "R7,z,9"]
    path = tmp_path / "f.csv"
    path.write_text("\n".join(lines))
    got = read_csv_rows(path, ["id", "a", "b"], {}, "sources.f")
    assert got.frame["id"].tolist() == ["R0", "R2", "R3", "R7"]  # x"y is text, as csv and pandas read it
    assert got.frame.loc[3, "a"] == 'q, "r"' and got.frame.index.tolist() == [0, 2, 3, 7]
    assert got.rejects["row"].tolist() == [1, 4, 5, 6]
    assert got.rejects["detail"].tolist() == ["line 3: a quote is left open or misplaced",
                                              "line 6: 4 fields, the header has 3", "line 7: 2 fields, the header has 3",
                                              "line 8: a quote is left open or misplaced"]

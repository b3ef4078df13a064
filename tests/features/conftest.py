"""Fixtures for ingestion tests: a small CRM export (deals + stage history + activities,
with PII columns and a few planted bad rows) that features/mappings/example_crm.yaml reads."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

PROJECT = Path(__file__).resolve().parents[2]
MAPPINGS = PROJECT / "features" / "mappings"
SHARED_DATA = PROJECT.parent / "shared" / "data"
PII_VALUES = ["Jane Doe", "jane@example.com", "+44 20 7946 0000", "Bob Roe", "bob@example.com"]

DEALS = pd.DataFrame([
    # id, created, stage, amount, owner, region, source, industry, employees, account, PII x3
    ["D1", "2024-01-05 09:00", "Closed Won", "1000", "ann", "EU", "web", "saas", "50", "A1"],
    ["D2", "2024-01-10 10:00", "Negotiation", "500", "ben", "US", "event", "retail", "120", "A2"],
    ["D3", "2024-01-12 11:00", "Closed Lost", "200", "ann", "EU", "-", "saas", "8", "A1"],
    ["D4", "2024-01-15 09:30", "Proposal", "-5", "ben", "US", "web", "retail", "30", "A2"],   # negative
    ["D5", "31-01-2024", "Prospecting", "300", "ann", "EU", "web", "saas", "10", "A3"],      # bad date
    ["D6", "2024-02-01 14:00", "Qualification", "700", "cat", "EU", "web", "saas", "01-May", "A3"],  # mangled
    ["D7", "2024-02-03 08:00", "Prospecting", "", "cat", "n/a", "ads", "media", "", "A4"],
], columns=["Opportunity ID", "Created Date", "Stage", "Amount", "Owner", "Region", "Lead Source",
            "Industry", "Employees", "Account ID"])
DEALS["Contact Name"] = ["Jane Doe", "Bob Roe", "Jane Doe", "Bob Roe", "Jane Doe", "Bob Roe", "Jane Doe"]
DEALS["Contact Email"] = ["jane@example.com", "bob@example.com"] * 3 + ["jane@example.com"]
DEALS["Contact Phone"] = "+44 20 7946 0000"

HISTORY = pd.DataFrame([
    ["D1", "Prospecting", "2024-01-05 09:00", "1000", "01/03/2024"],
    ["D1", "Proposal", "2024-01-20 10:00", "1100", "15/03/2024"],
    ["D1", "Closed Won", "2024-02-01 12:00", "1000", ""],
    ["D2", "Prospecting", "2024-01-10 10:00", "500", ""],
    ["D2", "Negotiation", "2024-02-10 10:00", "500", "30/04/2024"],
    ["D2", "Demo", "2024-02-11 10:00", "500", ""],              # unknown stage
    ["D3", "Prospecting", "2024-01-12 11:00", "200", ""],
    ["D3", "Closed Lost", "2024-02-15 08:00", "200", ""],
    ["D4", "Prospecting", "2024-01-15 09:30", "-5", ""],        # its deal is rejected
    ["D9", "Prospecting", "2024-01-15 09:30", "10", ""],        # no such deal
], columns=["Opportunity ID", "Stage", "Changed At", "Amount", "Expected Close"])

ACTIVITIES = pd.DataFrame([
    ["D1", "call", "2024-01-06 10:00"],
    ["D1", "email", "2024-01-01 10:00"],                       # before the deal was created
    ["D2", "meeting", "2024-01-11 15:00"],
    ["D9", "call", "2024-01-11 15:00"],                        # no such deal
], columns=["Opportunity ID", "Activity Type", "Activity Date"])


@pytest.fixture
def crm_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The small export in tmp_path/export; CRM_EXPORT_DIR points example_crm.yaml at it."""
    export = tmp_path / "export"
    export.mkdir()
    DEALS.to_csv(export / "deals.csv", index=False)
    HISTORY.to_csv(export / "stage_history.csv", index=False)
    ACTIVITIES.to_csv(export / "activities.csv", index=False)
    monkeypatch.setenv("CRM_EXPORT_DIR", str(export))
    return export


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or skip: the real exports are not part of the repository."""
    if not (SHARED_DATA / "olist-funnel").exists() or not (SHARED_DATA / "x-education").exists():
        pytest.skip(f"real CRM exports not found at {SHARED_DATA} (present in CI; see shared/data/README.md)")
    return SHARED_DATA


@pytest.fixture
def export_deals() -> pd.DataFrame:
    """The deals.csv rows of `crm_export` (PII columns included)."""
    return DEALS.copy()


@pytest.fixture
def pii_values() -> list[str]:
    """The PII cell values planted in `crm_export`: none may reach an output."""
    return list(PII_VALUES)

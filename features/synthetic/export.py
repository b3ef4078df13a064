"""A raw, dirty CRM export of a generated history, as real exports come: a star schema of
CSVs with the current state only, zombie deals nobody closed, same-day closes, a column
filled in only for won deals, a dimension key spelled two ways, and the expected close
date in the "Close Date" column of open deals; with its mapping and the ground truth.

    leadscore generate --deals 20000 --seed 0 --export DIR [--zombie-share 0.9]

DIR/deals.csv      Opportunity ID, Sales Agent, Product Code, Account ID, Lead ID, Deal Stage,
                   Created Date, Close Date, Amount, Signed Value (the fact file)
DIR/products.csv   Product Code, Product Name
DIR/teams.csv      Sales Agent, Manager, Regional Office
DIR/accounts.csv   Account ID, Sector, Employees, Segment (a few accounts missing)
DIR/leads.csv      Lead ID, Lead Source
DIR/mapping.yaml   the mapping that ingests it (recodes the product code, joins the four files)
DIR/truth/         truth.parquet + params.json (the generator's), export_truth.parquet (per deal:
                   zombie, same_day, misspelled_key, orphan_account, the clean outcome and close),
                   export_params.json

The generated canonical history is not changed: the export is made from it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from features.dataset import write_truth
from features.schema import CanonicalData
from features.snapshots import deals_at
from features.synthetic.generator import generate_data
from features.synthetic.params import PRODUCTS, STAGES, ExportParams

DATE = "%Y-%m-%d"
PRODUCT_CODES = {name: f"{name[:4].upper()}-{i + 1}" for i, name in enumerate(PRODUCTS)}
WON, LOST = "Won", "Lost"


@dataclass
class DirtyExport:
    """The files of an export (name -> frame), its mapping (as a dict) and the truth."""

    files: dict[str, pd.DataFrame]
    mapping: dict
    truth: pd.DataFrame  # the generator's truth table
    export_truth: pd.DataFrame  # per deal: what the export planted


def export_dirty(out_dir: str | Path, n_deals: int, seed: int = 0, start: str = "2023-01-01",
                 months: int = 24, zombie_share: float = 0.9) -> dict:
    """Generate a history and write its dirty export to `out_dir`; returns a summary."""
    data, truth = generate_data(n_deals, seed=seed, start=start, months=months)
    params = ExportParams(zombie_share=zombie_share)
    export = dirty_export(data, truth, params, Path(out_dir).resolve(), seed)
    write_export(export, out_dir, params)
    return export_summary(export, out_dir)


def dirty_export(data: CanonicalData, truth: pd.DataFrame, params: ExportParams, folder: Path,
                 seed: int) -> DirtyExport:
    """The export of a generated history (no file written; `folder` goes into the mapping)."""
    rng = np.random.default_rng([seed, 7])
    deals = data.deals.reset_index(drop=True)
    planted = _plant(deals, params, rng)
    fact = _fact_file(data, deals, planted)
    files = {"deals": fact, "products": _products(), "teams": _teams(deals),
             "accounts": _accounts(deals, planted), "leads": _leads(deals, fact)}
    return DirtyExport(files=files, mapping=export_mapping(folder, data.data_end), truth=truth,
                       export_truth=planted)


def _plant(deals: pd.DataFrame, params: ExportParams, rng: np.random.Generator) -> pd.DataFrame:
    """Per deal, the dirt the export gives it."""
    age = (deals["closed_at"] - deals["created_at"]).dt.total_seconds().to_numpy() / 86_400.0
    lost = (deals["outcome"] == "lost").to_numpy(dtype=bool, na_value=False)
    zombie = _zombies(lost, age, deals["outcome"].isna().to_numpy(), params, rng)
    quick = lost & ~zombie & (age <= params.same_day_within_days)
    same_day = quick & (rng.random(len(deals)) < params.same_day_share)
    accounts = deals["account_id"].drop_duplicates()
    orphans = accounts[rng.random(len(accounts)) < params.orphan_account_share]
    return pd.DataFrame({"deal_id": deals["deal_id"], "zombie": zombie, "same_day": same_day,
                         "misspelled_key": rng.random(len(deals)) < params.misspelled_key_share,
                         "orphan_account": deals["account_id"].isin(orphans).to_numpy(),
                         "outcome_clean": deals["outcome"], "closed_at_clean": deals["closed_at"]})


def _zombies(lost: np.ndarray, age: np.ndarray, is_open: np.ndarray, params: ExportParams,
             rng: np.random.Generator) -> np.ndarray:
    """Lost deals nobody marked: the slow losses, then random others up to the share."""
    if params.zombie_share <= 0:
        return np.zeros(len(lost), dtype=bool)
    zombie = lost & (age > params.loss_marked_within_days)
    target = int(round(params.zombie_share / (1.0 - params.zombie_share) * is_open.sum()))
    others = np.flatnonzero(lost & ~zombie)
    extra = max(0, min(len(others), target - int(zombie.sum())))
    zombie[rng.choice(others, extra, replace=False)] = True
    return zombie


def _fact_file(data: CanonicalData, deals: pd.DataFrame, planted: pd.DataFrame) -> pd.DataFrame:
    """deals.csv: marked closes with their date; open deals and zombies with their stage,
    amount and expected close date as the export date sees them."""
    zombie, same_day = planted["zombie"].to_numpy(), planted["same_day"].to_numpy()
    reopened = deals.assign(outcome=deals["outcome"].mask(zombie), closed_at=deals["closed_at"].mask(zombie))
    state = deals_at(CanonicalData(deals=reopened, meta=data.meta, stage_events=data.stage_events),
                     data.data_end).set_index("deal_id").reindex(deals["deal_id"])
    is_open = reopened["outcome"].isna().to_numpy()
    won = (deals["outcome"] == "won").to_numpy(dtype=bool, na_value=False)
    closed = deals["closed_at"].mask(same_day, deals["created_at"])
    close_date = np.where(is_open, _dates(state["expected_close_date"]), _dates(closed))
    stage = np.where(is_open, state["stage"].to_numpy(dtype=object, na_value=None), np.where(won, WON, LOST))
    amount = np.where(is_open, state["amount"].to_numpy(dtype="float64"), deals["amount"].to_numpy("float64"))
    code = deals["product"].map(PRODUCT_CODES)
    code = code.mask(planted["misspelled_key"].to_numpy(), code.str.lower() + " ")
    return pd.DataFrame({
        "Opportunity ID": deals["deal_id"], "Sales Agent": deals["owner"], "Product Code": code,
        "Account ID": deals["account_id"], "Lead ID": _lead_ids(deals), "Deal Stage": stage,
        "Created Date": _dates(deals["created_at"]), "Close Date": close_date, "Amount": np.round(amount, 2),
        "Signed Value": np.where(won, np.round(deals["amount"].to_numpy("float64"), 2), np.nan)})


def _dates(values: pd.Series) -> np.ndarray:
    return pd.Series(values).dt.strftime(DATE).to_numpy(dtype=object)


def _lead_ids(deals: pd.DataFrame) -> pd.Series:
    return "L" + deals["deal_id"].str[1:]


def _products() -> pd.DataFrame:
    return pd.DataFrame({"Product Code": list(PRODUCT_CODES.values()), "Product Name": list(PRODUCT_CODES)})


def _teams(deals: pd.DataFrame) -> pd.DataFrame:
    teams = deals[["owner", "team", "region"]].drop_duplicates("owner").sort_values("owner")
    return pd.DataFrame({"Sales Agent": teams["owner"].to_numpy(), "Manager": teams["team"].to_numpy(),
                         "Regional Office": teams["region"].to_numpy()})


def _accounts(deals: pd.DataFrame, planted: pd.DataFrame) -> pd.DataFrame:
    kept = deals.loc[~planted["orphan_account"].to_numpy()]
    acc = kept[["account_id", "industry", "company_size", "segment"]].drop_duplicates("account_id")
    acc = acc.sort_values("account_id")
    return pd.DataFrame({"Account ID": acc["account_id"].to_numpy(), "Sector": acc["industry"].to_numpy(),
                         "Employees": acc["company_size"].to_numpy(), "Segment": acc["segment"].to_numpy()})


def _leads(deals: pd.DataFrame, fact: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"Lead ID": fact["Lead ID"].to_numpy(), "Lead Source": deals["source"].to_numpy()})


def export_mapping(folder: Path, exported_at: pd.Timestamp) -> dict:
    """The mapping that ingests the export: recodes the product code, joins the dimension
    files, reads Close Date as the expected date of open deals."""
    def src(name: str, **extra) -> dict:
        return {"type": "csv", "path": str(folder / f"{name}.csv"), **extra}

    return {
        "name": "synthetic_export", "exported_at": exported_at.date().isoformat(),
        "sources": {"deals": src("deals", recode={"Product Code": {"strip": True, "case": "upper"}}),
                    "products": src("products"), "teams": src("teams"), "accounts": src("accounts"),
                    "leads": src("leads")},
        "stages": {"order": list(STAGES), "won": [WON], "lost": [LOST]},
        "tables": {"deals": {
            "source": "deals",
            "join": [{"source": "products", "key": "Product Code", "columns": ["Product Name"]},
                     {"source": "teams", "key": "Sales Agent", "columns": ["Manager", "Regional Office"]},
                     {"source": "accounts", "key": "Account ID", "columns": ["Sector", "Employees", "Segment"]},
                     {"source": "leads", "key": "Lead ID", "columns": ["Lead Source"]}],
            "columns": {"deal_id": "Opportunity ID", "created_at": "Created Date", "closed_at": "Close Date",
                        "stage": "Deal Stage", "amount": "Amount", "owner": "Sales Agent", "team": "Manager",
                        "region": "Regional Office", "product": "Product Name", "account_id": "Account ID",
                        "segment": "Segment", "source": "Lead Source"},
            "date_format": DATE,
            "attributes": {"industry": {"column": "Sector", "kind": "categorical"},
                           "company_size": {"column": "Employees", "kind": "numeric"},
                           "signed_value": {"column": "Signed Value", "kind": "numeric"}},
            "outcome": {"from": "stage", "close_date_is_expected_while_open": True}}},
    }


def write_export(export: DirtyExport, out_dir: str | Path, params: ExportParams) -> Path:
    """The CSVs, mapping.yaml and truth/ in `out_dir`."""
    out = Path(out_dir)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    for name, frame in export.files.items():
        frame.to_csv(out / f"{name}.csv", index=False)
    header = ("# Mapping of a dirty export written by `leadscore generate --export` (see docs/mapping.md).\n"
              "# signed_value is filled in only for won deals: a leak the leakage guard must catch.\n")
    (out / "mapping.yaml").write_text(header + yaml.safe_dump(export.mapping, sort_keys=False))
    write_truth(out, export.truth, export.truth.attrs["params"])
    export.export_truth.to_parquet(out / "truth" / "export_truth.parquet", index=False)
    (out / "truth" / "export_params.json").write_text(json.dumps(params.to_dict(), indent=2))
    return out


def export_summary(export: DirtyExport, out_dir: str | Path) -> dict:
    t = export.export_truth
    stage = export.files["deals"]["Deal Stage"]
    is_open = ~stage.isin([WON, LOST])
    return {"export": str(out_dir), "deals": len(t), "won": int((stage == WON).sum()),
            "lost_marked": int((stage == LOST).sum()), "open": int(is_open.sum()),
            "zombies": int(t["zombie"].sum()),
            "zombie_share_of_open": round(float(t["zombie"].sum() / max(1, is_open.sum())), 3),
            "same_day_closes": int(t["same_day"].sum()), "misspelled_keys": int(t["misspelled_key"].sum()),
            "orphan_account_deals": int(t["orphan_account"].sum()),
            "files": {name: len(frame) for name, frame in export.files.items()}}

"""Forgetting a customer (`leadscore forget`): an account's or some deals' rows leave the
canonical tables, the score log and the forecast store; the registered model versions
trained on them are named; each erasure is audited (counts, never the ids).

Which versions held the subject: training logs a compact, one-way set of its deals'
ids per run (`log_training_ids`: 64-bit hashes of deal and account ids, sorted, as the
artifact `monitoring/training_ids.npy`); `versions_holding` hashes the subject's ids and
looks them up in each registered version's set. A version trained before these sets were
logged is listed as "unknown". The models themselves keep aggregate statistics (win rates
by account, history tables): a version that held the subject should be retrained
(`--retrain`) and the old versions deleted from the registry by whoever owns it.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from features.dataset import read_dataset, write_dataset
from features.errors import LeadscoreError
from features.schema import CanonicalData

IDS_ARTIFACT = "monitoring/training_ids.npy"
TRUTH = Path("truth") / "truth.parquet"


@dataclass
class Forgotten:
    erasure_id: str
    deals: int  # deal ids erased
    rows_deleted: dict[str, int]
    versions_holding: list[int] = field(default_factory=list)
    versions_unknown: list[int] = field(default_factory=list)


def id_hashes(ids: Iterable[str]) -> np.ndarray:
    """Sorted distinct 64-bit hashes of ids (pandas' fixed-key SipHash: stable across runs)."""
    values = pd.Series(list(ids), dtype="string").dropna().drop_duplicates()
    return np.unique(pd.util.hash_pandas_object(values.astype(str), index=False).to_numpy(dtype="uint64"))


def training_ids(data: CanonicalData) -> np.ndarray:
    """The hashed deal and account ids of `data` (`id_hashes`; per partition, `np.unique` of
    the partitions' arrays concatenated is the same set)."""
    ids = [*data.deals["deal_id"].astype(str)]
    if "account_id" in data.deals:
        ids += data.deals["account_id"].dropna().astype(str).tolist()
    return id_hashes(ids)


def log_training_ids(data: CanonicalData | np.ndarray) -> None:
    """Into the active MLflow run: the hashed deal and account ids training read (the
    tables, or their `training_ids` already hashed)."""
    import mlflow

    hashes = data if isinstance(data, np.ndarray) else training_ids(data)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(IDS_ARTIFACT).name
        np.save(path, hashes)
        mlflow.log_artifact(str(path), artifact_path=str(Path(IDS_ARTIFACT).parent))


def subject_deals(data: CanonicalData, deal_ids: Iterable[str], account_id: str | None) -> list[str]:
    """The named deals plus the account's deals; a name matching nothing is an error."""
    named = [str(d) for d in deal_ids]
    known = set(data.deals["deal_id"].astype(str))
    unknown = [d for d in named if d not in known]
    if unknown:
        raise LeadscoreError(f"forget: {len(unknown)} deal id(s) not in the data (e.g. '{unknown[0]}')")
    ids = set(named)
    if account_id is not None:
        if "account_id" not in data.deals:
            raise LeadscoreError("forget: these deals have no account_id column")
        mine = data.deals.loc[data.deals["account_id"].astype("string") == str(account_id), "deal_id"]
        if mine.empty and (data.accounts is None or str(account_id) not in set(data.accounts["account_id"].astype(str))):
            raise LeadscoreError(f"forget: account id '{account_id}' is not in the data")
        ids |= set(mine.astype(str))
    if not ids and account_id is None:
        raise LeadscoreError("forget: name the subject: --account-id and/or --deal-id")
    return sorted(ids)


def without_subject(data: CanonicalData, ids: list[str], account_id: str | None
                    ) -> tuple[CanonicalData, dict[str, int]]:
    """The canonical tables without the subject's rows, and the rows removed per table."""
    from dataclasses import replace

    gone = set(ids)
    removed, tables = {}, {}
    for name in ("deals", "stage_events", "activities"):
        table = getattr(data, name)
        if table is None:
            continue
        keep = ~table["deal_id"].astype(str).isin(gone).to_numpy()
        tables[name], removed[name] = table[keep].reset_index(drop=True), int((~keep).sum())
    if data.accounts is not None:
        keep = (data.accounts["account_id"].astype(str) != str(account_id)).to_numpy() if account_id is not None \
            else np.ones(len(data.accounts), dtype=bool)
        tables["accounts"], removed["accounts"] = data.accounts[keep].reset_index(drop=True), int((~keep).sum())
    return replace(data, **tables), removed


def forget(data_dir: str | Path, deal_ids: Iterable[str] = (), account_id: str | None = None,
           model_name: str = "leadscore") -> Forgotten:
    """Erase the subject from `data_dir` (atomic rewrite, rejects.csv and the generator's
    truth included), the score log and the forecast store; audit it; name the versions."""
    from training.store.connection import open_store
    from training.store.erasure import erase, record_erasure

    folder = Path(data_dir)
    data = read_dataset(folder)
    ids = subject_deals(data, deal_ids, account_id)
    cleaned, removed = without_subject(data, ids, account_id)
    rejects_path = folder / "rejects.csv"
    rejects = pd.read_csv(rejects_path, dtype=str) if rejects_path.exists() else None
    if rejects is not None:
        hit = rejects.isin([*ids, *([str(account_id)] if account_id is not None else [])]).any(axis=1).to_numpy()
        rejects, removed["rejects"] = rejects[~hit], int(hit.sum())
    store = open_store()  # before any change: an unreachable store stops the erasure before it starts
    try:
        write_dataset(cleaned, folder, rejects)
        removed.update(_erase_truth(folder, ids))
        erasure = erase(store, deal_ids=ids, account_id=account_id)
        kind = "account" if account_id is not None else "deal"
        record_erasure(store, erasure, kind, len(ids) + (account_id is not None), removed)
    finally:
        store.close()
    holding, unknown = versions_holding(model_name, ids + ([str(account_id)] if account_id is not None else []))
    return Forgotten(erasure.erasure_id, len(ids), {**removed, **erasure.rows_deleted}, holding, unknown)


def versions_holding(model_name: str, ids: list[str]) -> tuple[list[int], list[int]]:
    """(versions whose training id set holds any of `ids`, versions without an id set)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from training.tracking import mlflow_client

    client = mlflow_client()
    try:
        versions = client.search_model_versions(f"name = '{model_name}'")
    except MlflowException:
        return [], []
    wanted = id_hashes(ids)
    holding, unknown = [], []
    for mv in versions:
        try:
            path = mlflow.artifacts.download_artifacts(f"runs:/{mv.run_id}/{IDS_ARTIFACT}")
        except (MlflowException, OSError):
            unknown.append(int(mv.version))
            continue
        if np.isin(wanted, np.load(path)).any():
            holding.append(int(mv.version))
    return sorted(holding), sorted(unknown)


def _erase_truth(folder: Path, ids: list[str]) -> dict[str, int]:
    """The generator's truth table (generated data only) loses the subject's rows too;
    rewritten to a new file, never in place (the old one may be hard-linked)."""
    path = folder / TRUTH
    if not path.exists():
        return {}
    truth = pd.read_parquet(path)
    keep = ~truth["deal_id"].astype(str).isin(set(ids)).to_numpy()
    staging = path.with_suffix(".writing")
    truth[keep].to_parquet(staging, index=False)
    staging.replace(path)
    return {"truth": int((~keep).sum())}

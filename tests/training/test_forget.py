"""`leadscore forget`: no row of the subject is left in any table (a scan of the data folder,
the generator's truth and every store table), the audit records the erasure without the ids,
and the registered versions trained on the subject are named."""
from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
import sqlalchemy as sa
from registry_helpers import log_constant_model
from typer.testing import CliRunner

from features.dataset import read_dataset, write_dataset, write_truth
from features.synthetic import generate_data
from serving.cli import app
from training.forget import log_training_ids, without_subject
from training.store.connection import STORE_URL_ENV, open_store
from training.store.erasure import erasures
from training.store.forecasts import record_forecasts
from training.store.schema import METADATA
from training.store.scores import record_scores
from training.tracking import mlflow_client


@pytest.fixture
def world(tmp_path, local_mlflow_uri, monkeypatch):
    """A generated dataset (with truth), a store holding scores and an account-level
    forecast, and three registered versions: trained with the subject, without it, and
    one without an id set."""
    monkeypatch.setenv(STORE_URL_ENV, f"sqlite:///{tmp_path / 'store.db'}")
    data, truth = generate_data(1200, seed=3)
    folder = tmp_path / "data"
    write_dataset(data, folder)
    write_truth(folder, truth, truth.attrs["params"])
    account = data.deals["account_id"].value_counts().index[0]
    deals = data.deals.loc[data.deals["account_id"] == account, "deal_id"].tolist()
    store = open_store()
    record_scores(store, [{"deal_id": d, "as_of": pd.Timestamp("2024-05-01"), "model_name": "leadscore",
                           "model_version": "1", "probability": 0.3, "score": 30, "tier": "warm",
                           "top_factors": ["stage"]} for d in [*deals, "D0000001"]])
    record_forecasts(store, pd.DataFrame([{"as_of": pd.Timestamp("2024-05-01"), "period_start": pd.Timestamp("2024-05-01"),
                                           "period_end": pd.Timestamp("2024-06-01"), "freq": "month",
                                           "group_column": "account_id", "group_value": account, "p10": 1.0,
                                           "p50": 2.0, "p90": 3.0, "model_name": "leadscore", "model_version": "1"}]))
    store.close()
    others = without_subject(data, deals, account)[0]
    for k, trained_on in enumerate([data, others, None]):
        run_id = log_constant_model(0.3, f"v{k + 1}", experiment="forget-tests")
        if trained_on is not None:
            with mlflow.start_run(run_id=run_id):
                log_training_ids(trained_on)
        mlflow.register_model(f"runs:/{run_id}/model", "leadscore")
    return folder, account, deals


def test_forget_leaves_no_row_of_the_subject(world):
    folder, account, deals = world
    result = CliRunner().invoke(app, ["forget", "--data", str(folder), "--account-id", account])
    assert result.exit_code == 0, result.output
    assert "versions trained on this subject: v1 " in result.output and "v2" not in result.output.split("subject:")[1]
    assert "before it was logged): v3" in result.output
    subject = {account, *deals}
    for path in folder.rglob("*"):  # every table of the data folder, the truth included
        if path.suffix in (".parquet", ".csv"):
            table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str)
            assert not table.astype(str).isin(subject).any().any(), path
    assert len(read_dataset(folder).deals) == 1200 - len(deals)
    store = open_store()
    with store.engine.connect() as conn:
        for table in METADATA.sorted_tables:
            rows = pd.DataFrame(conn.execute(sa.select(table)).mappings().all())
            assert rows.empty or not rows.astype(str).isin(subject).any().any(), table.name
    audit = erasures(store)
    store.close()
    counts = dict(zip(audit["table_name"], audit["rows_deleted"]))
    assert counts["scores"] == len(deals) and counts["forecasts"] == 1 and counts["deals"] == len(deals)
    assert counts["truth"] == len(deals) and counts["accounts"] == 1 and counts["stage_events"] > 0
    assert audit["erasure_id"].nunique() == 1 and set(audit["subject_kind"]) == {"account"}
    assert not audit.astype(str).isin(subject).any().any()  # the audit names no one


def test_forget_refuses_an_unknown_subject_before_changing_anything(world):
    folder, _account, _deals = world
    before = (folder / "deals.parquet").read_bytes()
    result = CliRunner().invoke(app, ["forget", "--data", str(folder), "--deal-id", "NOPE-1"])
    assert result.exit_code == 2 and "not in the data" in result.output
    assert (folder / "deals.parquet").read_bytes() == before
    assert mlflow_client().search_model_versions("name = 'leadscore'")


def test_forget_retrain_trains_a_version_without_the_subject(world):
    """`--retrain`: a new version trained on the cleaned tables; its training id set holds
    none of the subject's ids (the versions trained on them are still named), and no file
    of its MLflow run names the subject."""
    from training.forget import versions_holding

    folder, account, deals = world
    result = CliRunner().invoke(app, ["forget", "--data", str(folder), "--account-id", account, "--retrain"])
    assert result.exit_code == 0, result.output
    assert "retrained: v4" in result.output
    holding, _unknown = versions_holding("leadscore", [account, *deals])
    assert holding == [1]  # the new version (v4) was trained without the subject
    version = mlflow_client().get_model_version("leadscore", "4")
    run_dir = mlflow.artifacts.download_artifacts(run_id=version.run_id)
    subject = [account, *deals]
    for path in Path(run_dir).rglob("*"):
        if path.is_file() and path.suffix in (".json", ".csv", ".txt", ".yaml", ".md", ".html"):
            text = path.read_text(errors="ignore")
            assert not any(s in text for s in subject), path

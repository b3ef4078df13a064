"""The promotion gate cannot be fooled (skill first, labels checked, the champion scored
only from its own inputs), promotions are atomic and logged, ungated versions need
--force, and a model and data that do not belong together are refused everywhere."""
from __future__ import annotations

import json
import re
import threading

import mlflow
import models_cache
import numpy as np
import pandas as pd
import pytest
from registry_helpers import log_constant_model
from typer.testing import CliRunner

from features.dataset import write_dataset
from features.schema import CanonicalData, DatasetMeta
from serving.cli import app
from training import gate, registry
from training.run import candidate_score, candidate_skill, champion_score, log_run

DEMO = DatasetMeta(stages=["Lead", "Demo", "Proposal"], attributes={"industry": "categorical"}, name="demo")
XED = DatasetMeta(stages=["Lead", "Interested"], attributes={"lead_source": "categorical"}, name="xed")


def register_constant(name: str, brier: float, meta: DatasetMeta = DEMO, skill_z: float = 10.0,
                      run_id: str | None = None) -> gate.GateDecision:
    """A constant model through the gate, recorded as trained on `meta` with Brier `brier`."""
    return gate.register_and_gate(run_id or log_constant_model(0.5, f"b{brier}"), "model", name,
                                  candidate=gate.HoldoutScore(brier, 0.8, 0.4),
                                  skill={"n": 100, "z_vs_base_rate": skill_z, "z_vs_stage_rate": skill_z},
                                  compare_fn=recorded_brier(name), tags=registry.dataset_tags(meta, "sha"))


def recorded_brier(name: str):
    """compare_fn: the Brier a version recorded (a stand-in for re-scoring it)."""
    def score(version: int) -> gate.HoldoutScore:
        tags = mlflow.MlflowClient().get_model_version(name, str(version)).tags
        return gate.HoldoutScore(float(tags["leadscore.holdout.brier"]), 0.8, 0.4)

    return score


# --- the judgement, on numbers -------------------------------------------------------------

def test_skill_needs_a_significant_paired_gain_over_base_rate_and_stage_baseline():
    rng = np.random.default_rng(0)
    truth = rng.random(4000)
    y = (rng.random(4000) < truth).astype(float)
    stage = np.clip(truth + rng.normal(0, 0.3, 4000), 0.01, 0.99)
    good = gate.skill_report(y, truth, y.mean(), stage)
    assert good["z_vs_base_rate"] > 10 and good["z_vs_stage_rate"] > 2 and gate.lacks_skill(good) is None
    shuffled = rng.permutation(y)  # the model no longer knows anything about these labels
    refused = gate.lacks_skill(gate.skill_report(shuffled, truth, shuffled.mean(), stage))
    assert refused.startswith("no skill on its own test fold: its Brier beats the base rate by -")
    constant = gate.skill_report(y, np.full(4000, y.mean()), y.mean())
    assert constant["z_vs_base_rate"] == 0 and constant["z_vs_stage_rate"] is None
    assert "beats the base rate by 0.00 standard errors on 4,000 rows (needs 2)" in gate.lacks_skill(constant)
    assert "stage rate" in gate.lacks_skill(gate.skill_report(y, stage, y.mean(), truth))


def test_labels_look_corrupted_when_the_champion_collapses_or_the_rate_jumps():
    recorded = gate.HoldoutScore(0.12, 0.88, 0.40)
    assert gate.labels_look_corrupted(gate.HoldoutScore(0.15, 0.84, 0.42), recorded, 3) is None
    collapsed = gate.labels_look_corrupted(gate.HoldoutScore(0.33, 0.51, 0.40), recorded, 3)
    assert collapsed == ("labels look corrupted: champion v3 has AUC 0.510 on the new labels against 0.880 "
                         "on its own test fold")
    jumped = gate.labels_look_corrupted(gate.HoldoutScore(0.2, 0.85, 0.90), recorded, 3)
    assert jumped.startswith("labels look corrupted: the won rate of the test rows is 0.900 against 0.400")
    assert gate.labels_look_corrupted(gate.HoldoutScore(0.2, 0.5, 0.4), gate.HoldoutScore(0.2, 0.55, 0.4), 1) is None


def test_a_candidate_without_skill_is_never_champion(local_mlflow_uri):
    first = register_constant("skill", 0.10, skill_z=0.4)
    assert first.alias == "challenger" and first.reason.startswith("no skill on its own test fold")
    assert registry.champion_version("skill") is None
    assert register_constant("skill", 0.20).alias == "champion"


# --- atomic promotion and its log ------------------------------------------------------------

def test_two_gates_at_once_leave_the_better_champion_and_a_complete_log(local_mlflow_uri):
    name = "race"
    assert register_constant(name, 0.30).alias == "champion"
    runs = {brier: log_constant_model(0.5, f"b{brier}") for brier in (0.20, 0.25)}
    decisions, errors = [], []

    def gate_one(brier: float) -> None:
        try:
            decisions.append(register_constant(name, brier, run_id=runs[brier]))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=gate_one, args=(b,)) for b in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    best = next(d.version for d in decisions if d.candidate == 0.20)
    assert registry.champion_version(name) == best  # whichever gate ran first, the better one holds it
    log = registry.champion_log(name)
    assert [e["replaced"] for e in log[1:]] == [e["version"] for e in log[:-1]]  # an unbroken chain
    assert log[-1]["version"] == best and {e["by"] for e in log} == {"gate"}
    assert len(log) == 1 + sum(d.alias == "champion" for d in decisions)


def test_two_promotions_at_once_end_with_one_champion_and_both_logged(local_mlflow_uri):
    name = "race-promote"
    for brier in (0.30, 0.20, 0.10):
        register_constant(name, brier)  # v1, v2, v3: each better, each champion in turn
    registry.rollback(name)
    registry.rollback(name)
    threads = [threading.Thread(target=registry.promote, args=(name, v)) for v in (2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log = registry.champion_log(name)
    assert [e["replaced"] for e in log[1:]] == [e["version"] for e in log[:-1]]
    assert {e["version"] for e in log[-2:]} == {2, 3} and {e["by"] for e in log[-2:]} == {"promote"}
    assert registry.champion_version(name) == log[-1]["version"]
    tags = mlflow.MlflowClient().get_model_version(name, str(log[-1]["version"])).tags
    assert json.loads(tags[registry.PROMOTION_TAG]) == log[-1]


def test_a_version_without_a_gate_decision_needs_force(local_mlflow_uri):
    name = "killed"
    register_constant(name, 0.2)
    # a run killed right after registration: the version exists, no gate decision
    run_id = log_constant_model(0.5, "killed")
    ungated = int(mlflow.register_model(f"runs:/{run_id}/model", name, tags=registry.dataset_tags(DEMO)).version)
    out = CliRunner().invoke(app, ["promote", str(ungated), "--model-name", name])
    assert out.exit_code == 2
    assert "has no gate decision" in out.output and f"leadscore promote {ungated} --force" in out.output
    assert registry.champion_version(name) == 1
    out = CliRunner().invoke(app, ["promote", str(ungated), "--model-name", name, "--force"])
    assert out.exit_code == 0, out.output
    entry = registry.champion_log(name)[-1]
    assert (entry["version"], entry["replaced"], entry["by"]) == (ungated, 1, "promote --force")
    assert "no gate decision" in entry["reason"] and entry["at"]
    refused = register_constant(name, 0.5)  # worse than the forced champion: a challenger ...
    with pytest.raises(registry.RegistryError, match="the gate refused it"):
        registry.promote(name, refused.version)  # ... needs --force too


# --- model-data identity -----------------------------------------------------------------------

def write_meta_only(folder, meta: DatasetMeta):
    """A dataset folder with a few deals and the given meta (what the checks read)."""
    deals = pd.DataFrame({"deal_id": ["a"], "created_at": pd.to_datetime(["2024-01-01"]), "amount": [1.0],
                          "closed_at": pd.to_datetime([None]), "outcome": [None]})
    return write_dataset(CanonicalData(deals=deals, meta=meta), folder)


def test_check_model_data_names_both_and_allows_new_data_of_the_same_dataset(local_mlflow_uri):
    register_constant("demo-model", 0.2)
    new_rows = DatasetMeta(stages=list(DEMO.stages), attributes=dict(DEMO.attributes), name="demo")
    assert registry.check_model_data("demo-model", None, new_rows, "data/demo2") == 1  # new data, same dataset
    with pytest.raises(registry.ModelDataMismatch) as stages:
        registry.check_model_data("demo-model", None, XED, "data/xed")
    assert str(stages.value) == (
        "model 'demo-model v1' was trained on dataset 'demo' and data/xed holds dataset 'xed': they do not "
        "belong together (stages ['Lead', 'Demo', 'Proposal'] vs ['Lead', 'Interested']); use a model trained "
        "on this data (`--model-name`)")
    other_attrs = DatasetMeta(stages=DEMO.stages, attributes={"industry": "numeric", "size": "numeric"}, name="demo")
    differ = r"attributes differ \(not in the model: size; other kind: industry\)"
    with pytest.raises(registry.ModelDataMismatch, match=differ):
        registry.check_model_data("demo-model", 1, other_attrs, "data/demo")
    with pytest.raises(registry.ModelDataMismatch, match="'xed' and LEADSCORE_DATA"):
        registry.check_model_data("served", None, DEMO, "LEADSCORE_DATA", recorded=XED)


def test_a_found_version_checks_data_against_the_dataset_it_recorded(tmp_path):
    # what `leadscore forecast` / `score` check with the side process's answer (`registry.find_version`)
    found = registry.RegisteredVersion("crm", 3, tmp_path, DEMO)
    found.check_data(DatasetMeta(stages=list(DEMO.stages), attributes=dict(DEMO.attributes), name="demo"), "d")
    with pytest.raises(registry.ModelDataMismatch, match="^model 'crm v3' was trained on dataset 'demo' and data/xed"):
        found.check_data(XED, "data/xed")
    registry.RegisteredVersion("crm", 3, tmp_path, None).check_data(XED, "data/xed")  # nothing recorded: no check


def test_training_promoting_and_serving_another_dataset_are_refused(local_mlflow_uri, tmp_path):
    register_constant("crm", 0.2)
    with pytest.raises(registry.ModelDataMismatch, match="to train it into 'crm' anyway pass --new-dataset"):
        registry.check_training_target("crm", XED, "data/xed")
    registry.check_training_target("crm", XED, "data/xed", new_dataset=True)
    registry.check_training_target("other-name", XED, "data/xed")
    xed = register_constant("crm", 0.1, meta=XED)  # trained with --new-dataset: not compared with the champion
    assert xed.alias == "challenger" and "trained on dataset 'demo'" in xed.reason
    with pytest.raises(registry.RegistryError, match="trained on dataset 'xed', champion v1 on 'demo'"):
        registry.promote("crm", xed.version)
    xed_folder = str(write_meta_only(tmp_path / "xed", XED))
    with pytest.raises(registry.ModelDataMismatch, match="model 'crm v1' was trained on dataset 'demo' and .*xed hol"):
        registry.check_model_data("crm", None, XED, xed_folder)  # what serving checks with LEADSCORE_DATA
    assert registry.check_model_data("crm", None, DEMO, str(write_meta_only(tmp_path / "demo", DEMO))) == 1


@pytest.mark.parametrize("command", [["score", "--out", "{tmp}/s.csv"], ["evaluate"],
                                     ["forecast", "--out", "{tmp}/f.json", "--no-log"]])
def test_cli_commands_refuse_data_of_another_dataset(local_mlflow_uri, tmp_path, command):
    register_constant("crm", 0.2)
    folder = write_meta_only(tmp_path / "xed", XED)
    args = [a.format(tmp=tmp_path) for a in command]
    out = CliRunner().invoke(app, [*args, "--data", str(folder), "--model-name", "crm"])
    assert out.exit_code == 2
    message = " ".join(out.output.split())
    assert f"model 'crm v1' was trained on dataset 'demo' and {folder} holds dataset 'xed'" in message
    assert re.search(r"(check the model against the data|loading the model) ━+", message)  # the progress bar


def test_cli_promote_refuses_a_version_of_another_dataset_unless_forced(local_mlflow_uri):
    register_constant("crm", 0.2)
    xed = register_constant("crm", 0.1, meta=XED)
    out = CliRunner().invoke(app, ["promote", str(xed.version), "--model-name", "crm"])
    assert out.exit_code == 2
    line = " ".join(out.output.split())
    assert line.startswith(f"error: crm v{xed.version} cannot be promoted: ") and \
        "trained on dataset 'xed', champion v1 on 'demo'" in line
    assert registry.champion_version("crm") == 1
    forced = CliRunner().invoke(app, ["promote", str(xed.version), "--model-name", "crm", "--force"])
    assert forced.exit_code == 0 and registry.champion_version("crm") == xed.version


@pytest.mark.slow(reason="trains a (cold-start) model with the CLI into an MLflow store")
def test_train_records_the_dataset_and_refuses_another_into_the_same_name(local_mlflow_uri, tmp_path):
    from features.synthetic import generate_data

    data, _truth = generate_data(10, seed=1, months=2)
    folder = write_dataset(data, tmp_path / "tiny")
    out = CliRunner().invoke(app, ["train", "--data", str(folder), "--metrics-out", str(tmp_path / "m.json")])
    assert out.exit_code == 0, out.output
    m = json.loads((tmp_path / "m.json").read_text())
    tags = mlflow.MlflowClient().get_model_version("leadscore", str(m["model_version"])).tags
    recorded = registry.recorded_dataset(tags)
    assert (recorded.name, recorded.stages, recorded.attributes, recorded.static) == \
        (data.meta.name, list(data.meta.stages), dict(data.meta.attributes), data.meta.static)
    assert tags["leadscore.data_sha256"] == mlflow.get_run(m["run_id"]).data.params["data_sha256"]
    xed = write_meta_only(tmp_path / "xed", XED)
    refused = CliRunner().invoke(app, ["train", "--data", str(xed)])
    assert refused.exit_code == 2
    line = " ".join(refused.output.split())
    assert f"model 'leadscore v{m['model_version']}' was trained on dataset '{data.meta.name}' and {xed} holds " \
           f"dataset 'xed'" in line and line.endswith("to train it into 'leadscore' anyway pass --new-dataset")
    assert registry.champion_version("leadscore") == m["model_version"]  # nothing registered


# --- on real predictors (slow tier: the cached small predictor) --------------------------------

@pytest.fixture(scope="module")
def small():
    return models_cache.small_data()[0], models_cache.small_train_result()


def test_shuffled_labels_and_a_blind_champion_are_refused(small, local_mlflow_uri):
    data, result = small
    champion = log_run(result, data, "gate", "leadscore", "data/demo")
    assert champion["alias"] == "champion" and champion["close_probability"]["skill"]["z_vs_stage_rate"] > 2
    version = champion["model_version"]

    # a candidate trained on shuffled outcomes has no skill on its own (shuffled) test fold
    rng = np.random.default_rng(0)
    shuffled = result.test.assign(won=rng.permutation(result.test["won"].to_numpy()))
    assert gate.lacks_skill(candidate_skill(type(result)(**{**result.__dict__, "test": shuffled})))

    # a candidate claiming skill on shuffled labels: the champion's own AUC collapses there
    corrupted = gate.register_and_gate(
        champion["run_id"], "model", "leadscore", candidate=gate.HoldoutScore(0.1, 0.9, float(shuffled["won"].mean())),
        skill=candidate_skill(result), compare_fn=lambda v: champion_score("leadscore", v, data, shuffled),
        tags=registry.dataset_tags(data.meta, "sha"))
    assert corrupted.alias == "challenger"
    assert corrupted.reason.startswith("labels look corrupted: champion v1 has AUC 0.")

    # the same data without the attributes the champion was trained on: not scored on blanks
    blind = CanonicalData(deals=data.deals.assign(industry=None, company_size=np.nan), meta=data.meta,
                          stage_events=data.stage_events, activities=data.activities)
    assert champion_score("leadscore", version, blind, result.test) is None
    incomparable = gate.register_and_gate(
        champion["run_id"], "model", "leadscore", candidate=candidate_score(result), skill=candidate_skill(result),
        compare_fn=lambda v: champion_score("leadscore", v, blind, result.test),
        tags=registry.dataset_tags(data.meta, "sha"))
    assert incomparable.alias == "challenger" and incomparable.champion is None
    assert "its inputs are missing from this data" in incomparable.reason
    assert "not counted as a loss" in incomparable.reason
    assert registry.champion_version("leadscore") == version

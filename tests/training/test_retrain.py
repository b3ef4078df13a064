"""`leadscore retrain` (issue 16, item 4): ingest + train + gate from cron, idempotent, never
two at once, exit codes as documented (training/retrain.py)."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from serving.cli import app
from training import registry, retrain, tracking

pytestmark = pytest.mark.slow  # trains (a cold-start model on a small export) twice over


@pytest.fixture
def export(tmp_path):
    from features.synthetic.export import export_dirty

    export_dirty(tmp_path / "export", n_deals=1500, seed=3)
    return tmp_path / "export" / "mapping.yaml"


def _versions() -> list[int]:
    return sorted(int(v.version) for v in tracking.mlflow_client().search_model_versions("name = 'leadscore'"))


def test_retrain_promotes_then_says_unchanged_and_never_runs_twice_at_once(local_mlflow_uri, tmp_path, export):
    data = tmp_path / "data"
    first = CliRunner().invoke(app, ["retrain", "--mapping", str(export), "--data", str(data)])
    assert first.exit_code == 0, first.output
    assert "promoted: leadscore v1 is the champion" in first.output
    assert registry.champion_version("leadscore") == 1

    again = CliRunner().invoke(app, ["retrain", "--mapping", str(export), "--data", str(data)])  # same export
    assert again.exit_code == 0, again.output
    assert "unchanged: leadscore v1 was already trained on this data" in again.output and _versions() == [1]

    with retrain.retrain_lock(data) as held:  # a run that is still going (the lock is the one cron runs take)
        assert held
        busy = CliRunner().invoke(app, ["retrain", "--mapping", str(export), "--data", str(data)])
    assert busy.exit_code == 4 and "another retrain of" in busy.output and _versions() == [1]


def test_a_bad_mapping_is_one_line_and_exit_2(local_mlflow_uri, tmp_path):
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("tables: [this is not a mapping\n")
    out = CliRunner().invoke(app, ["retrain", "--mapping", str(mapping), "--data", str(tmp_path / "data")])
    assert out.exit_code == 2 and "error:" in out.output and "Traceback" not in out.output, out.output
    assert not (tmp_path / "data").exists()

"""The walkthrough notebook is executed on small data, so it cannot rot."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "walkthrough.ipynb"


@pytest.mark.slow
def test_walkthrough_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("LEADSCORE_NOTEBOOK_DEALS", "4000")
    monkeypatch.setenv("LEADSCORE_NOTEBOOK_WORKDIR", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "\n".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "champion" in text  # the run registered a model and read it back
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2  # reliability diagram and fan chart rendered

"""notebooks/walkthrough.ipynb runs top to bottom (profile, estimate, plan, charts, emitted config) in this venv's kernel."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "walkthrough.ipynb"


@pytest.mark.slow
def test_walkthrough_runs_in_this_python(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("PPTUNE_WALKTHROUGH_OUT", str(tmp_path))
    # jupyter_client starts the "python3" kernel spec with sys.executable (it swaps a bare "python" argv[0]
    # for it), so the kernel is this venv's interpreter; the first cell prints it and we check below.
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    first = "".join(o.get("text", "") for o in nb.cells[1].outputs)
    assert f"python: {sys.executable}" in first
    assert os.path.realpath(first.split("python: ")[1].split()[0]) == os.path.realpath(sys.executable)
    figures = tmp_path / "plan" / "figures"
    assert {p.name for p in figures.iterdir()} == {f"{n}.png" for n in ("bubble", "mbs", "timeline", "balance", "pareto")}
    assert (tmp_path / "plan" / "ds_config.json").exists() and (tmp_path / "tiny-cpu.json").exists()
    images = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 5

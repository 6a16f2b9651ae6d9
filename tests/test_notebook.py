"""examples/walkthrough.ipynb runs top to bottom (nbclient, a fresh kernel) against the tiny run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient", reason="executing the notebook needs nbclient (the dev extra)")
nbformat = pytest.importorskip("nbformat", reason="executing the notebook needs nbformat (the dev extra)")
pytest.importorskip("ipykernel", reason="executing the notebook needs ipykernel (the dev extra)")

ROOT = Path(__file__).resolve().parents[1]


def test_walkthrough_notebook_runs(tiny_run, tmp_path, monkeypatch):
    other = tmp_path / "other"
    shutil.copytree(tiny_run.path, other, ignore=shutil.ignore_patterns("models", "cache"))
    monkeypatch.setenv("PROBE_RUN", str(tiny_run.path))
    monkeypatch.setenv("PROBE_OTHER_RUN", str(other))
    nb = nbformat.read(ROOT / "examples" / "walkthrough.ipynb", as_version=4)
    # the kernel starts in the repository root, so `import probe` reads this checkout
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the redrawn figure
    text = "".join(o.get("text", "") for o in outputs)
    assert "CKA with a rotated copy: 1.000" in text
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "reliance_gap" in html and "other" in html  # the comparison table

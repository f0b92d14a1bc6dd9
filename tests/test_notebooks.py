"""The notebooks run top to bottom against the installed package, and are stored without
outputs (so diffs stay readable and no stale numbers are committed)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_the_notebooks_exist_and_are_stored_without_outputs() -> None:
    assert [p.name for p in NOTEBOOKS] == ["01_quickstart.ipynb", "02_ablation_results.ipynb"]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, path.name


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nbclient import NotebookClient

    monkeypatch.setenv("DS4D_NOTEBOOK_STEPS", "6")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={
        "metadata": {"path": str(path.parent)}}).execute()  # fmt: skip
    # Every code cell ran without error (nbclient raises otherwise) and the last one shows
    # something: the metrics of the quickstart, a figure of the results.
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[-1].outputs
    # Figures are displayed inline (a PNG in the cell's outputs), not drawn on a headless
    # backend where a user running the notebook would see nothing.
    for cell in code:
        if "plt.subplots(" in cell.source:
            kinds = [set(o.get("data", {})) for o in cell.outputs]
            assert any("image/png" in k for k in kinds), f"{path.name}: no figure in {kinds}"

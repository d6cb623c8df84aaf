"""Notebook hygiene: stored without outputs, one documented parameters cell, thin cells."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert [p.name for p in NOTEBOOKS][:1] == ["00_preflight.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_one_parameters_cell_with_one_documented_name_per_line(path):
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for line in tagged[0].source.splitlines():
        assert "=" in line and "  # " in line, f"undocumented parameter line: {line!r}"
        assert "=" not in line.split("  # ", 1)[1], f"papermill misreads '=' in help text: {line!r}"
        ast.parse(line)  # one assignment per line
    help_text = subprocess.run(
        [sys.executable, "-m", "papermill", "--help-notebook", str(path)], capture_output=True, text=True, timeout=120
    ).stdout
    for line in tagged[0].source.splitlines():
        name = line.split("=")[0].split(":")[0].strip()
        assert f"  {name}:" in help_text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_cells_are_thin(path):
    """A code cell is a few lines with no loops or branches: logic lives in runbook_lib."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code" or "parameters" in cell.metadata.get("tags", []):
            continue
        tree = ast.parse(cell.source)
        assert len(cell.source.splitlines()) <= 8, cell.source
        assert not [n for n in ast.walk(tree) if isinstance(n, (ast.For, ast.While, ast.If, ast.FunctionDef, ast.ClassDef))], cell.source

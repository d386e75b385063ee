"""The notebooks: outputs stripped in git, no logic of their own, and every one executes on small data."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))
EXPECTED = {"01", "02", "03", "04", "05"}
#: A notebook may hold a tiny lambda-like helper, never a function or class of real logic.
MAX_DEF_LINES = 3


def _code(path: Path) -> list[str]:
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def test_the_five_notebooks_exist() -> None:
    assert {p.name[:2] for p in NOTEBOOKS} >= EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_are_stripped(path: Path) -> None:
    book = nbformat.read(path, as_version=4)
    code = [(i, c) for i, c in enumerate(book.cells) if c.cell_type == "code"]
    dirty = [i for i, c in code if c.outputs or c.execution_count]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; strip them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_hold_no_logic(path: Path) -> None:
    long_defs = []
    for source in _code(path):
        for node in ast.walk(ast.parse(source)):
            is_def = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            if is_def and node.end_lineno - node.lineno + 1 > MAX_DEF_LINES:
                long_defs.append(node.name)
    assert not long_defs, f"{path.name} defines {long_defs}: move the logic into a package with tests"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nbclient import NotebookClient

    monkeypatch.setenv("SIYU_NOTEBOOK_CUSTOMERS", os.environ.get("SIYU_NOTEBOOK_CUSTOMERS", "3000"))
    monkeypatch.setenv("SIYU_NOTEBOOK_DIR", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    book = nbformat.read(path, as_version=4)
    # The kernel is this interpreter's (the project's virtualenv), started in a scratch folder.
    resources = {"metadata": {"path": str(tmp_path)}}
    NotebookClient(book, timeout=600, kernel_name="python3", resources=resources).execute()
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors

"""The layer contract (pyproject's ``[tool.importlinter]``) holds, and it breaks on a back-edge.

``lint-imports`` runs on a copy of the tree, once as it is and once with one import added that
points the wrong way; the contract must pass the first and name the added edge in the second, so
a contract that could never fail (a typo in a package name, say) fails this test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("hostcore", "reconciler", "renderers", "updates")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def copy_tree(target: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(
            REPO / package, target / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(REPO / "pyproject.toml", target / "pyproject.toml")
    return target


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    assert LINT_IMPORTS.is_file(), f"{LINT_IMPORTS} is missing: pip install import-linter"
    env = {**os.environ, "PYTHONPATH": str(tree)}  # the copy, ahead of the editable install
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=tree, env=env, capture_output=True, text=True,
        timeout=120,
    )


def test_the_tree_keeps_its_layers(tmp_path: Path) -> None:
    result = lint_imports(copy_tree(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "edge", "importer", "imported"),
    [
        ("updates/semver.py", "import reconciler.store", "updates.semver", "reconciler.store"),
        ("renderers/helpers.py", "import reconciler.schema", "renderers.helpers",
         "reconciler.schema"),
        ("hostcore/keys.py", "import updates.semver", "hostcore.keys", "updates.semver"),
        ("updates/waves.py", "import renderers.helpers", "updates.waves", "renderers.helpers"),
        ("reconciler/sources/gitsync.py", "import reconciler.host", "reconciler.sources.gitsync",
         "reconciler.host"),
    ],
)
def test_a_back_edge_breaks_the_contract(
    tmp_path: Path, module: str, edge: str, importer: str, imported: str
) -> None:
    tree = copy_tree(tmp_path)
    path = tree / module
    path.write_text(path.read_text() + f"\n{edge}  # injected back-edge\n")
    result = lint_imports(tree)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 kept, 1 broken" in result.stdout
    assert f"{importer} -> {imported}" in result.stdout, result.stdout

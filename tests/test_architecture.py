"""The floor plan (docs/architecture.md, .importlinter) holds, and the contract would catch a break.

`make test` runs `lint-imports` before pytest; these tests hold the same contract from pytest, prove that it
fails on a floor-breaking import and on a circle, and check what import-linter cannot: no private name
(leading underscore) is imported from another module of the package or by a launcher.
"""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    # cwd first on sys.path: the copy under test shadows the installed package
    env = {"PYTHONPATH": str(cwd), "PATH": str(LINT.parent), "NO_COLOR": "1"}
    return subprocess.run([str(LINT), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_the_import_contract_is_kept():
    proc = _lint(ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "3 kept, 0 broken" in proc.stdout


@pytest.mark.parametrize("edit, broken", [
    # the data floor reaching up into the engine: the layers contract names the offending line
    (("tvts/data/masking.py", "from tvts.engine import checkpoint  # noqa: F401\n"), "tvts.data.masking -> tvts.engine.checkpoint"),
    # evaluation pulling in the training loop
    (("tvts/eval/options.py", "from tvts.engine import trainer  # noqa: F401\n"), "tvts.eval.options -> tvts.engine.trainer"),
    # a circle between two sibling modules of one floor
    (("tvts/data/shards.py", "from tvts.data import loader  # noqa: F401\n"), "No cycles are allowed in tvts.data"),
])
def test_the_contract_fails_on_a_break(tmp_path, edit, broken):
    shutil.copytree(ROOT / "tvts", tmp_path / "tvts", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    path, line = edit
    target = tmp_path / path
    target.write_text(target.read_text() + "\n" + line)
    proc = _lint(tmp_path)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert broken in " ".join(proc.stdout.split()), proc.stdout[-3000:]


def private_imports(files, base: Path = ROOT) -> list[str]:
    """``from tvts.x import _name`` (or a relative import of one) in any of ``files``, named from ``base``."""
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("tvts")):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(f"{path.relative_to(base)}:{node.lineno}: from {node.module} import {alias.name}")
    return found


def test_no_private_names_cross_modules(tmp_path):
    files = sorted((ROOT / "tvts").rglob("*.py")) + sorted((ROOT / "launch").rglob("*.py"))
    assert private_imports(files) == []
    # and the check sees one
    bad = tmp_path / "probe.py"
    bad.write_text("import os\nfrom tvts.config import _f, ConfigError  # noqa: F401\nfrom os import _exit  # noqa: F401\n")
    assert private_imports([bad], tmp_path) == ["probe.py:2: from tvts.config import _f"]

"""The layers hold: import-linter's contracts (pyproject.toml) are kept and no pex modules import each other in a
cycle. Each check is also shown failing on a copy of the package with one bad import added."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--config", str(root / "pyproject.toml")], cwd=root,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                          timeout=120)


CYCLES = """
import json, grimp, networkx as nx
graph = grimp.build_graph("pex", exclude_type_checking_imports=True, cache_dir=None)
edges = nx.DiGraph()
for module in graph.modules:
    edges.add_node(module)
    edges.add_edges_from((module, other) for other in graph.find_modules_directly_imported_by(module)
                         if other.startswith("pex"))
print(json.dumps([sorted(c) for c in nx.strongly_connected_components(edges) if len(c) > 1]))
"""


def cycles(root: Path) -> list[set[str]]:
    """Groups of pex modules that import each other, directly or through others (grimp's graph of ``root/pex``)."""
    # in a fresh interpreter: grimp finds the package by import, and this one has imported the checkout's pex
    result = subprocess.run([sys.executable, "-c", CYCLES], cwd=root, env={"PYTHONPATH": str(root)}, capture_output=True,
                            text=True, timeout=120, check=True)
    return [set(c) for c in json.loads(result.stdout)]


def test_contracts_kept():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_import_cycles():
    assert cycles(ROOT) == []


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "pex", tmp_path / "pex", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "web", tmp_path / "web", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _add_import(root: Path, module: str, line: str) -> None:
    path = root / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text() + f"\n{line}\n")


@pytest.mark.parametrize(("module", "line", "contract"), [
    ("pex.store.workspace", "from pex.hte import learners", "Layers"),
    ("pex.experiment.data", "import pex.policy.base", "Layers"),
    ("pex.policy.base", "import pex.hte.learners", "What serving loads"),
    ("pex.policy.value", "from pex.evaluation import comparison", "What serving loads"),
    ("pex.policy.records", "import pex.policy.distill", "What serving loads"),
    ("pex.evaluation.comparison", "import pex.store.workspace", "never touch the store"),
    ("pex.online.lifts", "import pex.store.workspace", "never touch the store"),
    ("pex.online.space", "import pex.services.online", "Layers"),
    ("pex.services.run", "import flask", "never imports a web framework"),
    ("pex.services.serving", "import web.api", "pex never imports the web app"),
    ("web.api", "from pex.policy.base import Policy", "Views hold no modelling"),
    ("pex.online.traffic", "from pex.experiment.truth import distribution_truth", "The truth harness is for tests"),
])
def test_a_wrong_arrow_is_caught(copy: Path, module: str, line: str, contract: str):
    _add_import(copy, module, line)
    result = lint(copy)
    assert result.returncode != 0
    assert contract in result.stdout and "BROKEN" in result.stdout, result.stdout


def test_a_cycle_is_caught(copy: Path):
    _add_import(copy, "pex.experiment.spec", "import pex.experiment.effects")
    found = cycles(copy)
    assert any({"pex.experiment.spec", "pex.experiment.effects"} <= c for c in found)


def test_serving_a_value_policy_imports_no_training_code():
    """Loading the policy modules and an effect model, as a decision service does, leaves the learners,
    EconML and Ax unimported (the contract above, checked at run time in a fresh interpreter)."""
    code = ("import sys, pex.policy, pex.hte.model, pex.services.models; "
            "print(sorted(m for m in ('pex.hte.learners', 'econml', 'ax', 'pex.search.tuning') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={"PYTHONPATH": str(ROOT)}, capture_output=True,
                            text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"


def test_docs_link_only_to_files_in_the_repository():
    """README and docs/ stand alone: every relative link resolves to a file of the checkout, none leaves it."""
    import re

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert len(pages) >= 3
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            resolved = (page.parent / target).resolve()
            assert resolved.is_relative_to(ROOT), f"{page.name} links outside the repository: {target}"
            assert resolved.exists(), f"{page.name} links to a missing file: {target}"
        assert "shared/DESIGN.md" not in page.read_text(), page.name

"""The layers, checked: an experiment composes methods and never imports another experiment;
the methods know no experiment, Setup or sink; no engine module outgrows 600 lines."""

import ast
from pathlib import Path

import pytest
from support import ROOT

from lrbs.experiments import registry

LRBS = ROOT / "lrbs"
EXPERIMENTS = LRBS / "experiments"


def imported(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def experiment_of(path: Path) -> str:
    """The experiment a file of lrbs/experiments belongs to: its module, or its package."""
    rel = path.relative_to(EXPERIMENTS)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


EXPERIMENT_FILES = sorted(p for p in EXPERIMENTS.rglob("*.py") if p != EXPERIMENTS / "__init__.py")


@pytest.mark.parametrize("path", EXPERIMENT_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_experiment_imports_another(path):
    own = experiment_of(path)
    others = {
        m for m in imported(path) if m.startswith("lrbs.experiments.") and m.split(".")[2] != own
    }
    assert not others, f"{path.relative_to(ROOT)} imports {others}"


def test_the_registry_finds_the_experiments_that_are_packages():
    kinds = {k: m.__name__ for k, m in registry().items()}
    assert kinds["autotune"] == "lrbs.experiments.autotune"
    assert kinds["lr-batch-map"] == "lrbs.experiments.lr_batch_map"
    assert {m.split(".")[2] for m in kinds.values()} <= {experiment_of(p) for p in EXPERIMENT_FILES}


@pytest.mark.parametrize("name", ["critical_batch", "schedules"])
def test_the_methods_know_no_experiment_setup_or_sink(name):
    bad = {
        m
        for m in imported(LRBS / "methods" / f"{name}.py")
        if m.startswith(("lrbs.experiments", "lrbs.runs", "lrbs.core.setup", "pages"))
    }
    assert not bad


def test_no_engine_module_passes_600_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for p in LRBS.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 600
    }
    assert not long

"""The shape of the code, checked: the rules a reviewer would otherwise enforce by hand."""

import ast
from pathlib import Path

import pytest
from support import ROOT

from lrbs.experiments import registry

SOURCES = sorted(
    p
    for folder in ("lrbs", "pages", "bench")
    for p in (ROOT / folder).rglob("*.py")
    if ".venv" not in p.parts
) + [ROOT / "app.py"]


def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_underscore_imports_across_modules(path):
    """A module uses another's public names only (its own package's face may re-export)."""
    bad = []
    for node in ast.walk(tree(path)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] not in ("lrbs", "pages", "bench"):
                continue
            bad += [a.name for a in node.names if a.name.startswith("_")]
    assert not bad, f"{path.name} imports private names {bad}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_constructors_take_at_most_four_positional_arguments(path):
    """A class with many settings is built by keyword, never by position."""
    bad = []
    for node in ast.walk(tree(path)):
        if isinstance(node, ast.Call) and len(node.args) > 4:
            callee = ast.unparse(node.func)
            name = callee.split(".")[-1]
            if not name[:1].isupper() or callee.startswith(("nn.", "torch.")):
                continue  # a function, or torch's own variadic containers
            if any(isinstance(a, ast.Starred) for a in node.args):
                continue
            bad.append(f"line {node.lineno}: {ast.unparse(node.func)}")
    assert not bad, f"{path.name}: calls with more than 4 positional arguments: {bad}"


def test_no_formatter_escapes():
    hits = [
        str(p)
        for p in SOURCES + sorted((ROOT / "tests").rglob("*.py"))
        if "fmt: " + "skip" in p.read_text()
    ]
    assert not hits


def test_the_engine_never_imports_streamlit():
    for path in (ROOT / "lrbs").rglob("*.py"):
        for node in ast.walk(tree(path)):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n.split(".")[0] == "streamlit" for n in names), path


def test_every_experiment_has_the_shape():
    """KIND, a keyword-only frozen Config, a Result that rebuilds from rows, run()."""
    import dataclasses
    import inspect

    from lrbs.runs.experiment import Result

    found = registry()
    assert {"gd1d"} <= set(found)
    for kind, exp in found.items():
        assert exp.KIND == kind
        params = dataclasses.fields(exp.Config)
        assert all(f.kw_only for f in params), f"{kind}: Config is not keyword-only"
        assert exp.Config.__dataclass_params__.frozen, f"{kind}: Config is not frozen"
        assert issubclass(exp.Result, Result)
        assert list(inspect.signature(exp.run).parameters)[:4] == [
            "setup",
            "config",
            "sink",
            "stop",
        ]


def test_pages_hold_no_chart_building():
    """Charts come from lrbs.charts; a page builds none itself."""
    for path in sorted((ROOT / "pages").rglob("*.py")):
        text = path.read_text()
        assert "alt.Chart(" not in text, f"{path.name} builds an Altair chart"

"""The package layout's one-way rule: core <- eval, core <- organisms, and nothing back."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "emlens"
# subpackage -> the emlens subpackages it must never import
FORBIDDEN = {"core": {"eval", "organisms"}, "eval": {"organisms"}, "organisms": {"eval"}}


def emlens_imports(path: Path) -> set[str]:
    """The emlens subpackages a module imports (``emlens.X...`` -> ``X``), anywhere in it."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for n in names:
            parts = n.split(".")
            if parts[0] == "emlens" and len(parts) > 1:
                out.add(parts[1])
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_subpackage_imports_follow_the_rule(package):
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = emlens_imports(path) & FORBIDDEN[package]
        assert not bad, f"{path.relative_to(ROOT.parent)} imports emlens.{sorted(bad)}"


def test_the_rule_catches_a_violation(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from emlens.eval.metrics import is_em\n")
    assert emlens_imports(bad) & FORBIDDEN["core"] == {"eval"}


MAX_FUNCTION_LINES, MAX_MODULE_LINES = 60, 300


def sizes(path: Path) -> tuple[int, list[tuple[str, int]]]:
    """A module's line count and its functions (methods too) longer than the limit."""
    text = path.read_text()
    long = [
        (node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    return len(text.splitlines()), long


@pytest.mark.parametrize("package", ["", "cli", *sorted(FORBIDDEN)])
def test_modules_and_functions_stay_small(package):
    """Every module (subpackages such as eval/judges included) and every function in it."""
    paths = sorted((ROOT / package).glob("*.py") if not package else (ROOT / package).rglob("*.py"))
    assert paths
    for path in paths:
        n, long = sizes(path)
        where = path.relative_to(ROOT.parent)
        assert n <= MAX_MODULE_LINES, f"{where} has {n} lines (at most {MAX_MODULE_LINES})"
        assert not long, f"{where}: functions over {MAX_FUNCTION_LINES} lines: {long}"

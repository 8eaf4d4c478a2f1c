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


def docstring_lines(node: ast.AST) -> int:
    """The lines of ``node``'s own docstring (0 without one)."""
    body = getattr(node, "body", None)
    first = body[0] if body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
        if isinstance(first.value.value, str):
            return first.end_lineno - first.lineno + 1
    return 0


def sizes(path: Path) -> tuple[int, list[tuple[str, int]]]:
    """A module's line count and its functions (methods too) longer than the limit, both
    without docstrings: the limits are on code, and every docstring example must run
    (tests/test_docstring_examples.py), so examples are not cut to fit."""
    tree = ast.parse(path.read_text())
    nodes = [tree, *ast.walk(tree)]
    documented = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    docs = sum(docstring_lines(n) for n in set(nodes) if isinstance(n, documented))
    long = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            n = node.end_lineno - node.lineno + 1 - docstring_lines(node)
            if n > MAX_FUNCTION_LINES:
                long.append((node.name, n))
    return len(path.read_text().splitlines()) - docs, long


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


def test_sizes_leave_docstrings_out(tmp_path):
    doc = "\n".join(["    >>> 1 + 1", "    2"] * 40)
    body = "\n".join(f"    x{i} = {i}" for i in range(59))
    path = tmp_path / "m.py"
    path.write_text(f'"""Module."""\n\n\ndef f():\n    """Doc.\n\n{doc}\n    """\n{body}\n')
    assert sizes(path) == (2 + 1 + 59, [])  # f: 60 code lines, within the limit
    path.write_text(path.read_text() + "    x59 = 59\n")
    assert sizes(path)[1] == [("f", 61)]

"""Two import rules of the code base, read from the source with ``ast``.

**Private names stay in their module.** A private name is a module-level function, class or
variable whose name starts with one underscore (``_logits``; dunders such as ``__version__``
are not private). No module of ``emlens/`` or ``benchmarks/`` imports another module's
private name (``from emlens.eval.metrics import _logits``): what two modules share is public,
with a docstring. A private *module* (``emlens/core/_arch.py``, ``emlens/cli/_checks.py``)
is internal to the library: modules of ``emlens/`` may import its public names, and its own
package may import the module by name (``from emlens.cli import _checks``); ``benchmarks/``
(and any user of the library) go through public modules. Tests may reach private names.

**Names are imported from where they are defined.** Only a package's ``__init__.py``
re-exports: another module's ``__all__`` lists only names it defines (by ``def``, ``class``
or assignment), and every import of a name from an emlens module that is not a package
``__init__`` names the module that defines it (``DirectionSet`` from
``emlens.core.direction_set``, not from ``emlens.core.directions``, which only uses it).
Checked over ``emlens/``, ``benchmarks/`` and ``tests/``.

Each rule's checker is also run on a small synthetic broken source, so the test would fail.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "emlens"
CHECKED = ("emlens", "benchmarks", "tests")


def is_private(name: str) -> bool:
    """A name starting with one underscore (not a dunder)."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def module_path(module: str, root: Path = ROOT) -> Path | None:
    """The file of a dotted module under ``root`` (a package's ``__init__.py``), or None."""
    base = root.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def defined_names(tree: ast.Module) -> set[str]:
    """The names a module defines at its top level: ``def``, ``class`` and assignments
    (also inside top-level ``if``/``try`` blocks)."""
    out: set[str] = set()
    body = list(tree.body)
    while body:
        node = body.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                out |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.If | ast.Try):
            body += node.body + node.orelse + getattr(node, "finalbody", [])
            body += [s for h in getattr(node, "handlers", []) for s in h.body]
    return out


def declared_all(tree: ast.Module) -> list[str]:
    """The string entries of a module's ``__all__`` (empty when it has none)."""
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            named = any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets)
            if named and isinstance(node.value, ast.List | ast.Tuple):
                return [e.value for e in node.value.elts if isinstance(e, ast.Constant)]
    return []


def imported_names(tree: ast.Module, package: str) -> list[tuple[str, str, int]]:
    """Every ``from M import name`` of a module as (absolute M, name, line); ``package`` is
    the importing module's package, for relative imports."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*parts, module] if module else parts)
            out += [(module, a.name, node.lineno) for a in node.names]
    return out


def imported_modules(tree: ast.Module) -> list[tuple[str, int]]:
    """Every ``import M`` of a module as (M, line)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
    return out


def package_of(path: Path, root: Path = ROOT) -> str:
    """The dotted package a file belongs to (for ``emlens/core/x.py``: ``emlens.core``)."""
    return ".".join(path.relative_to(root).parent.parts)


def private_imports(path: Path, source: str, root: Path = ROOT) -> list[str]:
    """The imports of ``source`` (the module at ``path``) that break the private-name rule."""
    tree = ast.parse(source)
    package = package_of(path, root)
    in_library = path.relative_to(root).parts[0] == "emlens"
    bad = []
    for module, name, line in imported_names(tree, package):
        if module.split(".")[0] != "emlens":
            continue  # third-party privates are beyond this rule (and not ours)
        where = f"{path.relative_to(root)}:{line}"
        submodule = module_path(f"{module}.{name}", root)
        if is_private(name) and submodule is None:
            bad.append(f"{where} imports the private name {name} of {module}")
        elif is_private(name) and package != module:
            bad.append(f"{where} imports the private module {module}.{name} from outside")
        elif any(map(is_private, module.split("."))) and not in_library:
            bad.append(f"{where} imports from the private module {module}")
    for module, line in imported_modules(tree):
        parts = module.split(".")
        if parts[0] == "emlens" and any(map(is_private, parts)) and not in_library:
            bad.append(f"{path.relative_to(root)}:{line} imports the private module {module}")
    return bad


def listed_elsewhere(tree: ast.Module) -> list[str]:
    """What a (non-package) module re-exports: the ``__all__`` entries it does not define,
    and the names it imports ``as`` themselves (``from m import X as X``)."""
    own = defined_names(tree)
    bad = [
        f"__all__ lists {n}, which it does not define" for n in declared_all(tree) if n not in own
    ]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            same = [a.name for a in node.names if a.asname == a.name]
            bad += [f"line {node.lineno} re-exports {n} (import {n} as {n})" for n in same]
    return bad


def reexports(path: Path, source: str, root: Path = ROOT) -> list[str]:
    """The breaks of the re-export rule in ``source`` (the module at ``path``): what it
    re-exports (unless a package ``__init__``), and the names it imports from an emlens
    module (not a package) that does not define them."""
    tree = ast.parse(source)
    where = path.relative_to(root)
    bad = [] if path.name == "__init__.py" else [f"{where}: {b}" for b in listed_elsewhere(tree)]
    for module, name, line in imported_names(tree, package_of(path, root)):
        origin = module_path(module, root) if module.split(".")[0] == "emlens" else None
        if origin is None or origin.name == "__init__.py":
            continue  # not ours, or a package (which may re-export)
        if module_path(f"{module}.{name}", root) is None and name not in _defined(origin):
            bad.append(f"{where}:{line} imports {name} from {module}, which does not define it")
    return bad


_DEFINED: dict[Path, set[str]] = {}


def _defined(path: Path) -> set[str]:
    if path not in _DEFINED:
        _DEFINED[path] = defined_names(ast.parse(path.read_text()))
    return _DEFINED[path]


def sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("folder", ["emlens", "benchmarks"])
def test_no_module_imports_another_modules_private_name(folder):
    bad = [b for p in sources(folder) for b in private_imports(p, p.read_text())]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("folder", CHECKED)
def test_names_are_imported_from_the_module_that_defines_them(folder):
    bad = [b for p in sources(folder) for b in reexports(p, p.read_text())]
    assert not bad, "\n".join(bad)


def test_the_private_rule_catches_a_violation():
    effects = LIBRARY / "eval" / "effects.py"
    bench = ROOT / "benchmarks" / "b.py"
    assert private_imports(effects, "from emlens.eval.metrics import _logits\n")
    assert private_imports(effects, "def f():\n    from emlens.core.tokens import _x\n")
    assert private_imports(bench, "from emlens.core._arch import decoder\n")
    assert not private_imports(effects, "from emlens.core._arch import decoder\n")
    assert not private_imports(LIBRARY / "cli" / "__init__.py", "from emlens.cli import _checks\n")
    assert private_imports(LIBRARY / "eval" / "x.py", "from emlens.cli import _checks\n")
    assert private_imports(bench, "import emlens.core._arch\n")
    assert not private_imports(bench, "import _common\nfrom _common import _x\n")  # not ours
    assert not private_imports(effects, "from torch.nn import _reduction\n")


def test_the_reexport_rule_catches_a_violation():
    directions = LIBRARY / "core" / "directions.py"
    reexporting = "from emlens.core.direction_set import DirectionSet\n__all__ = ['DirectionSet']\n"
    assert reexports(directions, reexporting)
    assert not reexports(LIBRARY / "core" / "__init__.py", reexporting)
    assert reexports(directions, "from emlens.core.activations import input_device\n")
    assert reexports(directions, "from emlens.core.activations import Row\n")
    assert not reexports(directions, "from emlens.core.tokens import Row\n")
    assert reexports(directions, "from emlens.core.tokens import Row as Row\n")
    assert not reexports(directions, "from emlens.core import tokens, Row\n")

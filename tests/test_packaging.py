"""Every package emlens imports is declared in pyproject.toml (issue 24: numpy and
huggingface_hub were imported but not declared)."""

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [r for reqs in project["optional-dependencies"].values() for r in reqs]
    reqs = [*project["dependencies"], *extras]
    return {_name(r) for r in reqs} - {"emlens"}


def imported_modules() -> set[str]:
    found = set()
    for path in (ROOT / "emlens").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"emlens", "__future__"}


def test_every_imported_package_is_declared():
    dists = importlib.metadata.packages_distributions()
    have = declared()
    missing = []
    for module in sorted(imported_modules()):
        names = {_name(d) for d in dists.get(module, [module])}
        if not names & have:
            missing.append(f"{module} (distribution {', '.join(sorted(names))})")
    assert not missing, f"imported by emlens but not in pyproject.toml: {missing}"


def test_a_device_map_without_accelerate_says_which_extra(monkeypatch):
    import importlib.util

    from emlens.core import models

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "accelerate" else real(n, *a)
    )
    with pytest.raises(ImportError, match=r"emlens\[gpu\]"):
        models._where("auto", models.torch.float32)
    assert models._where("cpu", models.torch.float32)["device_map"] == "cpu"

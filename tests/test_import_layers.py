"""The layers of ``../shared/ARCHITECTURE.md`` (imports point down only), checked on the
source: every ``import`` and ``from ... import`` of every module, including the ones inside
functions, is read with :mod:`ast` (no module is imported)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("costmodel", "solver", "service", "runtime", "migrations")

ALLOWED: dict[str, set[str]] = {
    # the model of the world: numpy + pydantic only
    "costmodel": {"costmodel", "numpy", "pydantic"},
    # search: the cost model and OR-Tools; nothing of HTTP, databases or the emitters
    "solver": {"solver", "costmodel", "numpy", "pydantic", "ortools"},
    # emitters and the torch worker: costmodel specs, never service/ or solver/
    "runtime": {"runtime", "costmodel", "numpy", "pydantic", "torch", "httpx"},
}
"""What each lower layer may import besides the standard library (service/ and migrations/
sit on top and may import any of them)."""


def imported_roots(path: Path, pkg: str) -> set[str]:
    """Top-level names of the modules ``path`` imports (relative imports: ``pkg``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            roots.add(pkg if node.level else (node.module or "").split(".")[0])
    return roots


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_lower_layers_import_only_what_is_below_them(package: str) -> None:
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    wrong = {str(p.relative_to(ROOT)): sorted(r for r in imported_roots(p, package)
                                              if r not in stdlib and r not in ALLOWED[package])
             for p in modules(package)}
    wrong = {k: v for k, v in wrong.items() if v}
    assert not wrong, f"{package}/ imports outside its layer: {wrong}"


def test_the_check_sees_every_package_and_catches_an_upward_import(tmp_path: Path) -> None:
    for package in PACKAGES:
        assert modules(package), f"no modules found under {package}/"
    bad = tmp_path / "probe.py"  # an import inside a function, and a relative one
    bad.write_text("from . import bulk\ndef f():\n    from service.settings import Settings\n"
                   "    return Settings\n")
    assert imported_roots(bad, "costmodel") == {"costmodel", "service"}

"""The component packages never import each other; they share skiff/ and skiffpb/ only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = ("controlplane", "nodeagent", "netproxy", "clusterdns")


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("component", COMPONENTS)
def test_component_imports_no_other_component(component: str) -> None:
    files = sorted((ROOT / component).rglob("*.py"))
    assert files, f"{component}/ has no Python files"
    others = set(COMPONENTS) - {component}
    offenders = {
        str(f.relative_to(ROOT)): sorted(imported_packages(f) & others)
        for f in files
        if imported_packages(f) & others
    }
    assert offenders == {}


def test_shared_library_imports_no_component() -> None:
    offenders = {
        str(f.relative_to(ROOT)): sorted(imported_packages(f) & set(COMPONENTS))
        for f in sorted((ROOT / "skiff").rglob("*.py"))
        if imported_packages(f) & set(COMPONENTS)
    }
    assert offenders == {}


def test_checker_sees_imports(tmp_path: Path) -> None:
    """The checker itself must notice an import, or the tests above prove nothing."""
    sample = tmp_path / "m.py"
    sample.write_text("import netproxy.rules\nfrom controlplane.store import x\nfrom . import y\n")
    assert imported_packages(sample) == {"netproxy", "controlplane"}

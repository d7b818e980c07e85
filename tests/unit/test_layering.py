"""Import direction between the repository's Python packages, checked for every package.

- `skiff/` is the shared library: it imports only the generated `skiffpb/`;
- the components `controlplane/`, `nodeagent/` and `netproxy/` never import each other; they
  share `skiff/` and `skiffpb/`;
- `deploy/` runs the components (as processes), so it may import them, but nothing but
  `bench/` and `tests/` imports `deploy/`;
- `bench/` may import anything but `tests/`; nothing imports `bench/` but `tests/`;
- only `tests/` imports `tests/`.

Every top-level Python package must appear in ALLOWED, so a new package is placed on purpose.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = {"controlplane", "nodeagent", "netproxy", "clusterdns"}
BASE = {"skiff", "skiffpb"}

# package -> the repository packages it may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "skiff": {"skiffpb"},
    "controlplane": BASE,
    "nodeagent": BASE,
    "netproxy": BASE,
    "clusterdns": BASE,
    "deploy": BASE | COMPONENTS,
    "bench": BASE | COMPONENTS | {"deploy"},
    "tests": BASE | COMPONENTS | {"deploy", "bench"},
}
IGNORED = {".venv", "skiffpb", "build"}  # the virtualenv; generated code (never committed)


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def top_level_packages() -> set[str]:
    return {p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name not in IGNORED}


def test_every_package_has_a_rule() -> None:
    assert top_level_packages() - set(ALLOWED) == set()
    assert set(ALLOWED) - top_level_packages() - {"skiffpb"} == set()


@pytest.mark.parametrize("package", sorted(ALLOWED), ids=sorted(ALLOWED))
def test_package_imports_only_what_it_may(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no Python files"
    forbidden = (set(ALLOWED) | BASE) - ALLOWED[package] - {package}
    offenders = {
        str(f.relative_to(ROOT)): sorted(imported_packages(f) & forbidden)
        for f in files
        if imported_packages(f) & forbidden
    }
    assert offenders == {}


@pytest.mark.parametrize(("package", "must_not_import"), [
    ("skiff", "deploy"), ("skiff", "controlplane"), ("controlplane", "netproxy"), ("nodeagent", "controlplane"),
    ("netproxy", "nodeagent"), ("deploy", "bench"), ("bench", "tests"), ("controlplane", "deploy"),
], ids=lambda v: str(v))
def test_rules_forbid_the_known_wrong_directions(package: str, must_not_import: str) -> None:
    """The table itself must forbid these, or the test above would prove nothing about them."""
    assert must_not_import not in ALLOWED[package]


def test_checker_sees_imports(tmp_path: Path) -> None:
    """The checker itself must notice an import, or the tests above prove nothing."""
    sample = tmp_path / "m.py"
    sample.write_text("import netproxy.rules\nfrom controlplane.store import x\nfrom . import y\n"
                      "def f():\n    from deploy.lab import Lab\n")
    assert imported_packages(sample) == {"netproxy", "controlplane", "deploy"}

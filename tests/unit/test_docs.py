"""The docs name only files that exist: every repository path in README.md and docs/*.md.

A path is a word starting with one of the repository's top-level directories and either ending
in `/` (a directory), or with a file extension in its last part, or with a glob (`*.txt`);
words like `deploy/web` (a resource in a command line) or `skiff/web:1.0` (an image) are not
paths. Generated code (skiffpb/) is not named this way.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOP = ("proto", "skiff", "controlplane", "nodeagent", "netproxy", "deploy", "examples", "tests", "bench", "docs")
# Not preceded by a path or variable character (so not the tail of an absolute path or URL),
# not followed by an image tag, a placeholder or more of a word.
PATH = re.compile(r"(?<![\w./~$<{-])((?:" + "|".join(TOP) + r")/[\w./*-]*)(?![\w<{:@])")
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def named_paths(text: str) -> list[str]:
    out = []
    for m in PATH.finditer(text):
        path = m.group(1).rstrip(".,")
        last = path.rstrip("/").rsplit("/", 1)[-1]
        if path.endswith("/") or "." in last or "*" in last:
            out.append(path)
    return out


def exists(path: str) -> bool:
    return any(ROOT.glob(path)) if "*" in path else (ROOT / path).exists()


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_doc_names_only_existing_files(doc: Path) -> None:
    missing = sorted({p for p in named_paths(doc.read_text()) if not exists(p)})
    assert missing == []


@pytest.mark.parametrize(("text", "paths"), [
    ("see `docs/store.md`.", ["docs/store.md"]),
    ("`controlplane/store/` holds it", ["controlplane/store/"]),
    ("scripts in tests/unit/store/testdata/*.txt", ["tests/unit/store/testdata/*.txt"]),
    ("skiff scale deploy/web --replicas 4", []),
    ("image skiff/web:1.0 and docker.io/skiff/web", []),
    ("/var/lib/skiff/local and controlplane/controllers/<name>.py", []),
    ("python -m bench.report", []),
], ids=["file", "directory", "glob", "resource", "image", "absolute-and-placeholder", "module"])
def test_what_counts_as_a_path(text: str, paths: list[str]) -> None:
    assert named_paths(text) == paths


# Files outside this repository (a developer's notes next to it) must not be relied on.
OUTSIDE = re.compile(r"\.\./shared|\bshared/(?:containerd|STYLE|DESIGN|qemu-vm)\.md")
TEXT_SUFFIXES = {".py", ".md", ".sh", ".toml", ".txt", ".yaml", ".yml", ".cfg", ".proto", ""}
SKIP_DIRS = {".venv", "skiffpb", ".git", "build", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}


def test_nothing_points_outside_the_repository() -> None:
    offenders = []
    for top, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        for name in files:
            path = Path(top, name)
            if path.suffix in TEXT_SUFFIXES and OUTSIDE.search(path.read_text(errors="replace")):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_a_missing_file_is_noticed() -> None:
    assert not exists("docs/no-such-doc.md") and exists("docs/") and exists("tests/unit/*.py")

"""What can be checked of the Vagrant lab without booting a VM (deploy/vagrant/README.md):
every shell script passes shellcheck, the Vagrantfile is valid Ruby (tree-sitter's Ruby
grammar; `ruby -c` too where Ruby is installed) and describes 1 control plane + 2 workers on
Debian 12 for both providers, each provisioning script gets the arguments it reads, and every
`python -m deploy.install` call in the scripts parses with the install's own argument parser."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from deploy import install
from tests.support.prereq import require_binaries

ROOT = Path(__file__).resolve().parents[2]
VAGRANT = ROOT / "deploy" / "vagrant"
SCRIPTS = sorted((ROOT / "deploy").rglob("*.sh"))


def test_there_are_scripts() -> None:
    assert {p.name for p in SCRIPTS} >= {"provision-common.sh", "provision-control-plane.sh", "provision-worker.sh",
                                         "run-e2e.sh"}


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_shellcheck(script: Path) -> None:
    require_binaries("shellcheck")
    proc = subprocess.run(["shellcheck", "--severity=style", str(script)], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert script.stat().st_mode & 0o111, f"{script.name} is not executable"
    assert script.read_text().startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in script.read_text()


def test_shellcheck_notices_a_problem(tmp_path: Path) -> None:
    """The check above could pass vacuously; a known mistake must fail it."""
    require_binaries("shellcheck")
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/usr/bin/env bash\nrm -rf $DIR/*\n")
    assert subprocess.run(["shellcheck", str(bad)], capture_output=True, check=False).returncode != 0


def ruby_parse_errors(source: bytes) -> bool:
    import tree_sitter_ruby
    from tree_sitter import Language, Parser

    return Parser(Language(tree_sitter_ruby.language())).parse(source).root_node.has_error


def test_vagrantfile_is_ruby() -> None:
    source = (VAGRANT / "Vagrantfile").read_bytes()
    assert not ruby_parse_errors(source)
    assert ruby_parse_errors(source.replace(b"\nend\n", b"\n", 1))  # the parser does notice a broken file
    if shutil.which("ruby"):
        proc = subprocess.run(["ruby", "-c", str(VAGRANT / "Vagrantfile")], capture_output=True, text=True,
                              check=False)
        assert proc.returncode == 0, proc.stderr


def test_vagrantfile_structure() -> None:
    text = (VAGRANT / "Vagrantfile").read_text()
    assert 'ENV.fetch("SKIFF_BOX", "debian/bookworm64")' in text
    assert 'config.vm.provider "virtualbox"' in text and 'config.vm.provider "libvirt"' in text
    assert 'ENV.fetch("SKIFF_WORKERS", "2")' in text
    assert '[["cp1", CONTROL_PLANE_IP, "control-plane"]]' in text
    assert 'node.vm.network "private_network", ip: ip' in text
    assert 'synced_folder REPO, "/opt/skiff", type: "rsync"' in text
    for path in re.findall(r'path: "([^"]+)"', text):
        assert (VAGRANT / path).is_file(), path


def _top_level_items(text: str) -> int:
    depth, items = 0, 1 if text.strip() else 0
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            items += 1
    return items


@pytest.mark.parametrize("script", ["provision-common.sh", "provision-control-plane.sh", "provision-worker.sh"])
def test_provisioning_gets_the_arguments_it_reads(script: str) -> None:
    vagrantfile = (VAGRANT / "Vagrantfile").read_text()
    match = re.search(rf'path: "{re.escape(script)}",\s*args: \[(.*?)\]\n', vagrantfile, re.S)
    assert match, f"{script} is not provisioned with args"
    given = _top_level_items(match.group(1))
    read = max(int(n) for n in re.findall(r"\$\{(\d)", (VAGRANT / script).read_text()))
    assert given == read


SAMPLE = {"PROXY_MODE": "ipvs"}  # script variables whose values the parser checks


def install_calls() -> list[tuple[str, list[str]]]:
    out = []
    for script in SCRIPTS:
        for line in script.read_text().splitlines():
            if "-m deploy.install" in line and not line.lstrip().startswith("#"):
                call = line.split("-m deploy.install", 1)[1]
                words = shlex.split(re.sub(r'"\$([A-Z_]+)"', lambda m: SAMPLE.get(m.group(1), "x"), call))
                words = [w.removesuffix(";") for w in words if w not in (";", "then", "$@", "$@;")]  # "$@": extra flags
                out.append((script.name, words))
    return out


@pytest.mark.parametrize("call", install_calls(), ids=lambda c: f"{c[0]}:{c[1][0]}")
def test_scripts_call_the_install_with_flags_it_knows(call: tuple[str, list[str]]) -> None:
    _, words = call
    args = install.build_parser().parse_args(words)
    assert args.command in ("control-plane", "worker", "remove", "upgrade", "join-command")

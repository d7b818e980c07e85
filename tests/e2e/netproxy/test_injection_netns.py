"""The hostile-name rules of tests/unit/netproxy/test_injection.py through the real
iptables-restore (nft and legacy), in a network namespace of their own (`unshare -n`: nothing on
the machine changes): the text is accepted, and iptables-save shows exactly the rules rendered,
none injected."""

from __future__ import annotations

import subprocess

import pytest

from netproxy.iptables.render import render
from netproxy.iptables.ruleset import parse
from tests.support.prereq import require_binaries, require_root
from tests.unit.netproxy.test_injection import CFG, HOSTILE, INJECTED, scenario

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("backend", ["nft", "legacy"])
@pytest.mark.parametrize(("namespace", "name", "port_name"), list(HOSTILE.values()), ids=list(HOSTILE))
def test_real_iptables_restore_takes_exactly_the_rendered_rules(backend: str, namespace: str, name: str,
                                                                port_name: str) -> None:
    require_root()
    require_binaries("unshare", f"iptables-{backend}-restore", f"iptables-{backend}-save")
    text = render(*scenario(namespace, name, port_name), CFG)
    script = f"iptables-{backend}-restore --noflush && iptables-{backend}-save"
    done = subprocess.run(["unshare", "-n", "sh", "-c", script], input=text, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    saved = parse(done.stdout)
    ours = parse(text)
    for key, rules in ours.chains.items():
        assert len(saved.rules(*key)) == len(rules), key
    assert INJECTED not in [line.strip() for line in done.stdout.splitlines()]  # as a rule of its own
    assert sum(len(r) for k, r in saved.chains.items() if k[1].startswith("KUBE-")) == sum(
        len(r) for r in ours.chains.values())

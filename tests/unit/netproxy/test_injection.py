"""Hostile names cannot add lines to iptables-restore input.

Services, namespaces and port names reach the rules only inside `--comment "..."`. The api-server
validates names, but netproxy trusts nothing it reads: an object written to the store directly
(or by a buggy or older api-server) may carry a quote, a backslash, a newline or a 10 kB name.
Each case renders Services with such names straight through the planner and renderer (no
validation on the way) and checks that the text has exactly the lines the same Services with
plain names give, each comment one argument, and the names shown with "?" for what is unsafe.
The same texts go through the real iptables-restore in tests/e2e/netproxy/test_injection_netns.py.
"""

from __future__ import annotations

import shlex

import pytest

from netproxy.config import ProxyConfig
from netproxy.iptables.layout import COMMENT_MAX, comment
from netproxy.iptables.render import render
from netproxy.iptables.ruleset import parse
from netproxy.ipvs.render import build_ruleset as build_ipvs
from netproxy.model import service_ports
from skiffpb.api.v1 import types_pb2 as t
from tests.unit.netproxy.objects import eps, port, subset, svc

CFG = ProxyConfig(cluster_cidr="10.244.0.0/16")
INJECTED = '-A KUBE-SERVICES -j ACCEPT'

HOSTILE: dict[str, tuple[str, str, str]] = {  # id: (namespace, name, port name)
    "quote-in-name": ("default", 'web" -j ACCEPT -m comment --comment "x', "http"),
    "newline-in-name": ("default", f"web\n{INJECTED}\n", "http"),
    "crlf-and-COMMIT-in-namespace": (f"ns\r\nCOMMIT\n*filter\n{INJECTED}\n", "web", "http"),
    "backslash-quote-in-port": ("default", "web", 'http\\" -j DROP #'),
    "nul-and-unicode": ("default", "we\x00b\u2028é", "http"),
    "very-long": ("default", "w" * 10_000, "p" * 300),
}


def scenario(namespace: str, name: str, port_name: str) -> tuple[list[t.Service], list[t.Endpoints]]:
    services = [svc(name, "10.96.0.10", port(80, name=port_name, target=port_name, node_port=30080),
                    namespace=namespace, type="NodePort"),
                svc("empty", "10.96.0.11", port(81, name=port_name), namespace=namespace)]
    endpoints = [eps(name, subset(["10.244.1.2", "10.244.2.2"], [(port_name, 8080)]), namespace=namespace)]
    return services, endpoints


def shape(text: str) -> list[str]:
    """Each line with its comment's text blanked: what the structure of the rules is."""
    out = []
    for line in text.splitlines():
        if line.startswith("-A "):
            args = shlex.split(line)
            if "--comment" in args:
                args[args.index("--comment") + 1] = "C"
            line = " ".join(args)
        out.append(line)
    return out


@pytest.mark.parametrize(("namespace", "name", "port_name"), list(HOSTILE.values()), ids=list(HOSTILE))
def test_iptables_text_has_exactly_the_rules_of_plain_names(namespace: str, name: str, port_name: str) -> None:
    hostile = render(*scenario(namespace, name, port_name), CFG)
    plain = render(*scenario("default", "web", "http"), CFG)
    assert all(ord(ch) < 0x7f for ch in hostile)
    assert INJECTED not in hostile.splitlines()
    assert len(hostile.splitlines()) == len(plain.splitlines())
    # Chain names are hashes of the names, so they differ (and so does the order of their
    # declarations, sorted by name); the rest of every line is the same.
    assert sorted(_unchained(line) for line in shape(hostile)) == sorted(_unchained(line) for line in shape(plain))
    rules = parse(hostile)
    assert sum(len(r) for r in rules.chains.values()) == sum(len(r) for r in parse(plain).chains.values())
    for line in hostile.splitlines():
        if "--comment" in line:
            args = shlex.split(line)
            text = args[args.index("--comment") + 1]
            assert len(text) <= COMMENT_MAX and '"' not in text and "\\" not in text


def _unchained(line: str) -> str:
    return " ".join("CHAIN" if w.lstrip(":").startswith(("KUBE-SVC-", "KUBE-SEP-")) else w for w in line.split())


@pytest.mark.parametrize(("namespace", "name", "port_name"), list(HOSTILE.values()), ids=list(HOSTILE))
def test_ipvs_mode_rules_are_safe_too(namespace: str, name: str, port_name: str) -> None:
    sps, _ = service_ports(*scenario(namespace, name, port_name))
    text = build_ipvs(sps, CFG).restore_text()
    plain_sps, _ = service_ports(*scenario("default", "web", "http"))
    assert len(text.splitlines()) == len(build_ipvs(plain_sps, CFG).restore_text().splitlines())
    assert INJECTED not in text.splitlines()


@pytest.mark.parametrize(("text", "shown"), [
    ("default/web:http cluster IP", "default/web:http cluster IP"),
    ('a"b', "a?b"),
    ("a\\b", "a?b"),
    ("a\nb\rc\td", "a?b?c?d"),
    ("é", "?"),
], ids=["plain", "quote", "backslash", "control", "non-ascii"])
def test_comment(text: str, shown: str) -> None:
    assert comment(text) == f'-m comment --comment "{shown}"'

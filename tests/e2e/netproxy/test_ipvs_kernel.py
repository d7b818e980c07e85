"""IPVS mode against a real kernel: virtual servers, kube-ipvs0, rules, traffic, changes, cleanup.

The kernel-facing part runs once per module in `ipvs_scenario.py` (see its docstring for the
phases): directly where this kernel has IP_VS (the Vagrant VMs), otherwise in a QEMU guest
booting Debian's kernel (deploy/vm/, docs/vm.md), which is the case on the build machines.
The tests here judge its record on the host: the planner's desired state against what the
kernel reports (through pyroute2 and, independently, `ipvsadm -Ln`), the answers to
connections, the iptables rules against the renderer's, and what cleanup leaves.
"""

from __future__ import annotations

import compileall
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netproxy.config import ProxyConfig
from netproxy.iptables.ruleset import parse, rule_args
from netproxy.ipvs.kernel import ipvs_available
from netproxy.ipvs.plan import IpvsState, RealServer, VirtualServer, desired_state, plan
from netproxy.ipvs.render import build_ruleset
from tests.e2e.netproxy import ipvs_scenario as scenario
from tests.support.prereq import require, require_binaries, require_root

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[3]
GUEST_TIMEOUT = 600  # the guest's whole run; about 1-2 minutes normally, more on a loaded machine
Record = dict[str, Any]


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Record]:
    require_root()
    require_binaries("ip", "busybox", "iptables-nft-save", "ipvsadm", "ipset", "modprobe")
    run_dir = tmp_path_factory.mktemp("ipvs")
    started = time.monotonic()
    argv = [sys.executable, "-m", "tests.e2e.netproxy.ipvs_scenario"]
    # Bytecode compiled here saves the guest, whose root is read-only and whose Python is slow, from
    # compiling the modules it imports on every run.
    for package in ("netproxy", "skiff", "skiffpb", "tests"):
        compileall.compile_dir(ROOT / package, quiet=1)
    if ipvs_available()[0]:
        where, out = "host", run_dir / "result.json"
        done = subprocess.run([*argv, str(out)], cwd=ROOT, capture_output=True, text=True, timeout=GUEST_TIMEOUT,
                              check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    else:
        from deploy.vm import guest, image

        require_binaries("qemu-system-x86_64", "timeout")
        try:
            image.find_kernel()
        except FileNotFoundError as exc:
            require(False, str(exc))
        where, out = "guest", run_dir / "share" / "result.json"
        result = guest.run([*argv, f"{image.SHARE_DIR}/result.json"], name="ipvs", timeout=GUEST_TIMEOUT,
                           run_dir=run_dir)
        assert result.status == 0, result.explain()
    data: Record = json.loads(out.read_text())
    print(f"\nIPVS scenario ran in the {where} (kernel {data['kernel']}): {time.monotonic() - started:.1f}s in all, "
          f"{data['seconds']:.1f}s for the scenario, phases "
          + ", ".join(f"{p['phase']} {p['seconds']:.1f}s" for p in data["phases"]), file=sys.stderr)
    yield data


def phase(record: Record, name: str) -> Record:
    found: Record = next(p for p in record["phases"] if p["phase"] == name)
    return found


def observed_state(p: Record) -> IpvsState:
    o = p["observed"]
    services = {(a, proto, port): VirtualServer(a, proto, port, sched, pers) for a, proto, port, sched, pers
                in o["services"]}
    dests = {tuple(k): frozenset(RealServer(*d) for d in v) for k, v in o["dests"]}
    return IpvsState(services, dests, frozenset(o["addresses"]), o["link"])  # type: ignore[arg-type]


SERVICE_LINE = re.compile(r"^(TCP|UDP|SCTP)\s+(\S+):(\d+)\s+(\S+)(?:\s+persistent\s+(\d+))?")
DEST_LINE = re.compile(r"^\s+->\s+(\S+):(\d+)\s+(\S+)\s+(\d+)")


def parse_ipvsadm(text: str) -> tuple[set[VirtualServer], dict[tuple[str, str, int], set[tuple[str, int, int, str]]]]:
    """`ipvsadm -Ln` -> (virtual servers, {service key: {(address, port, weight, forward)}})."""
    services: set[VirtualServer] = set()
    dests: dict[tuple[str, str, int], set[tuple[str, int, int, str]]] = {}
    key: tuple[str, str, int] | None = None
    for line in text.splitlines():
        if m := SERVICE_LINE.match(line):
            vs = VirtualServer(m[2], m[1], int(m[3]), m[4], int(m[5] or 0))
            services.add(vs)
            key = vs.key
            dests[key] = set()
        elif (m := DEST_LINE.match(line)) and key is not None:
            dests[key].add((m[1], int(m[2]), int(m[4]), m[3]))
    return services, dests


SYNCED = ["sync", "resync", "endpoints-changed", "web-deleted"]


@pytest.mark.parametrize("name", SYNCED, ids=SYNCED)
def test_the_kernel_holds_what_the_planner_wants(record: Record, name: str) -> None:
    """After each sync, the planner's desired state is what the kernel reports, and re-planning is empty."""
    p = phase(record, name)
    desired = desired_state(scenario.snapshot(p["services"]).service_ports, node_ips=(scenario.NODE_IP,),
                            scheduler="rr")
    observed = observed_state(p)
    assert plan(desired, observed, node_ips=(scenario.NODE_IP,)) == []
    assert dict(observed.services) == dict(desired.services)
    assert dict(observed.dests) == dict(desired.dests)
    assert observed.addresses == desired.addresses and observed.link
    # ipvsadm reads the kernel on its own: the same virtual servers, every real server masqueraded.
    services, dests = parse_ipvsadm(p["ipvsadm"])
    assert services == set(desired.services.values())
    assert dests == {k: {(d.address, d.port, d.weight, "Masq") for d in v} for k, v in desired.dests.items()}


def test_clusterip_nodeport_and_affinity_become_virtual_servers(record: Record) -> None:
    services, _ = parse_ipvsadm(phase(record, "sync")["ipvsadm"])
    assert {str(vs) for vs in services} == {
        f"TCP {scenario.VIP}:80 rr", f"TCP {scenario.NODE_IP}:{scenario.NODE_PORT} rr",
        f"TCP {scenario.STICKY_VIP}:81 rr persistent 600"}


def test_the_first_sync_builds_everything_and_a_resync_changes_nothing(record: Record) -> None:
    first = phase(record, "sync")
    desired = desired_state(scenario.snapshot(first["services"]).service_ports, node_ips=(scenario.NODE_IP,))
    from_empty = plan(desired, IpvsState(link=False), node_ips=(scenario.NODE_IP,))
    assert first["detail"].startswith(f"{len(from_empty)} ipvs changes"), first["detail"]
    assert phase(record, "resync")["detail"].startswith("0 ipvs changes"), phase(record, "resync")["detail"]


HALF = scenario.CONNECTIONS // 2
TRAFFIC = [
    # (phase, client, address, port, answers): rr alternates, so each backend gets exactly half.
    ("sync", "n1", scenario.VIP, 80, {"p1": HALF, "p3": HALF}),
    ("sync", "p2", scenario.VIP, 80, {"p1": HALF, "p3": HALF}),
    ("sync", "n2", scenario.NODE_IP, scenario.NODE_PORT, {"p1": HALF, "p3": HALF}),
    ("endpoints-changed", "n1", scenario.VIP, 80, {"p1": HALF, "p2": HALF}),
    ("endpoints-changed", "n2", scenario.NODE_IP, scenario.NODE_PORT, {"p1": HALF, "p2": HALF}),
    ("web-deleted", "n1", scenario.VIP, 80, {"ERR": 2}),
]


@pytest.mark.parametrize("name,client,address,port,answers", TRAFFIC,
                         ids=[f"{t[0]}-{t[1]}-to-{t[2]}:{t[3]}" for t in TRAFFIC])
def test_connections_reach_the_endpoints_round_robin(record: Record, name: str, client: str, address: str, port: int,
                                                    answers: dict[str, int]) -> None:
    got = {(c, a, pt): seen for c, a, pt, seen in phase(record, name)["connections"]}
    assert got[(client, address, port)] == answers


def _link(p: Record) -> tuple[str, list[str]]:
    if not p["link"]:
        return "", []
    link = p["link"][0]
    return (link.get("linkinfo", {}).get("info_kind", ""),
            sorted(f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", []) if a.get("family") == "inet"))


LINKS = [
    ("sync", "dummy", [f"{scenario.VIP}/32", f"{scenario.STICKY_VIP}/32"]),
    ("web-deleted", "dummy", [f"{scenario.STICKY_VIP}/32"]),
    ("cleanup", "", []),
]


@pytest.mark.parametrize("name,kind,addresses", LINKS, ids=[t[0] for t in LINKS])
def test_kube_ipvs0_is_a_dummy_holding_the_cluster_ips(record: Record, name: str, kind: str,
                                                       addresses: list[str]) -> None:
    assert _link(phase(record, name)) == (kind, addresses)


def normalized(rule: str) -> list[str]:
    """A rule's arguments as a sorted multiset, in iptables-save's spelling.

    iptables-save orders a rule's matches its own way and prints `--xor-mark M` as
    `--set-xmark M/0x0`; anything else that differs is a real difference.
    """
    args = rule_args(rule)
    for i, arg in enumerate(args[:-1]):
        if arg == "--xor-mark":
            args[i:i + 2] = ["--set-xmark", f"{args[i + 1]}/0x0"]
    return sorted(args)


@pytest.mark.parametrize("name", SYNCED, ids=SYNCED)
def test_the_masquerade_rules_are_the_rendered_ones_and_no_ipset_is_used(record: Record, name: str) -> None:
    p = phase(record, name)
    rendered = build_ruleset(scenario.snapshot(p["services"]).service_ports,
                             ProxyConfig(cluster_cidr=scenario.CLUSTER_CIDR, ipvs_scheduler="rr")).frozen()
    saved = parse(p["iptables"])
    for chain in ("KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING"):
        want = [normalized(r) for r in rendered[("nat", chain)]]
        assert [normalized(r) for r in saved.rules("nat", chain)] == want, chain
    assert p["ipsets"].split() == []  # IPVS mode here needs no ipset (docs/netproxy.md)


def test_ipvs_sysctls_are_set(record: Record) -> None:
    assert phase(record, "sync")["sysctls"] == {
        "net/ipv4/vs/conntrack": "1", "net/ipv4/conf/all/arp_ignore": "1", "net/ipv4/conf/all/arp_announce": "2"}


def test_cleanup_removes_what_netproxy_owns_and_only_that(record: Record) -> None:
    p = phase(record, "cleanup")
    assert p["cleanup_exit"] == 0
    services, _ = parse_ipvsadm(p["ipvsadm"])
    foreign_ip, foreign_port = scenario.FOREIGN.split(":")
    assert services == {VirtualServer(foreign_ip, "TCP", int(foreign_port), "wlc")}
    assert not p["observed"]["link"] and p["observed"]["addresses"] == []
    assert "KUBE-" not in p["iptables"]


def test_netproxy_ipvs_check_matches_the_kernel() -> None:
    """netproxy's own detection (used by --mode ipvs) agrees with the kernel's module list:
    /sys/module/ip_vs exists exactly when IP_VS is built in or loaded."""
    ok, why = ipvs_available()
    assert ok == Path("/sys/module/ip_vs").is_dir(), why
    assert ok or "kernel has no IP_VS" in why

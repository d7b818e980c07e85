"""The network of a network-namespace lab: hosts on a LAN bridge, planned as `ip` commands.

A lab is several "hosts" (network namespaces) on one machine, wired to a bridge that lives
in its own namespace (`<prefix>-lan`), so the root namespace gets no lab interfaces except
an optional uplink: a veth from the root namespace into the bridge, with the LAN's first
address, through which the CLI and tests reach the api-servers. All lab traffic stays on
this machine: the uplink's subnet is directly connected, and routes the root namespace gets
for the service and pod CIDRs (only when asked) point at a lab host.

`plan_up` and `plan_down` are pure: they return the commands; `apply` runs them. Teardown is
idempotent: deleting a namespace that is already gone is not an error.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from skiff import defaults

MAX_PREFIX = 6  # interface names are at most 15 characters: "<prefix>-up" and friends fit


@dataclass(frozen=True)
class Host:
    name: str  # "cp", "n1"
    ip: str  # LAN address, e.g. "10.77.0.10"
    roles: tuple[str, ...] = ("worker",)  # "control-plane" and/or "worker"
    # A QEMU guest (deploy/vmhost.py): no namespace or veth here; its tap joins the LAN bridge
    # and the guest configures its own eth0 with `guest_commands`.
    guest: bool = False


@dataclass(frozen=True)
class LabNetwork:
    prefix: str
    lan_cidr: str
    hosts: tuple[Host, ...]
    service_cidr: str = defaults.SERVICE_CIDR
    cluster_cidr: str = defaults.CLUSTER_CIDR
    uplink: bool = True  # veth from the root namespace into the LAN
    # Routes in the root namespace for the service and pod CIDRs via this host (a one-host
    # cluster that a user's curl should reach); empty: none.
    host_routes_via: str = ""
    sysctls: tuple[tuple[str, str], ...] = field(default=(
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv4.conf.all.rp_filter", "0"),
    ))

    def netns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    @property
    def lan_netns(self) -> str:
        return f"{self.prefix}-lan"

    @property
    def uplink_name(self) -> str:
        return f"{self.prefix}-up"

    @property
    def uplink_ip(self) -> str:
        return str(next(ipaddress.ip_network(self.lan_cidr).hosts()))

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.lan_cidr).prefixlen

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(f"lab {self.prefix} has no host {name!r}")

    def with_role(self, role: str) -> list[Host]:
        return [h for h in self.hosts if role in h.roles]


def pick_lan(second_octets: Sequence[int], third_octet: int, start: int,
             taken: Sequence[ipaddress.IPv4Network]) -> str | None:
    """The first 10.<second>.<third>.0/24, trying `second_octets` from index `start` round, that
    overlaps nothing in `taken`; None when every one does."""
    octets = list(second_octets)
    for i in range(len(octets)):
        net = ipaddress.IPv4Network(f"10.{octets[(start + i) % len(octets)]}.{third_octet}.0/24")
        if not any(net.overlaps(other) for other in taken):
            return str(net)
    return None


def root_routes() -> list[ipaddress.IPv4Network]:
    """The destinations the root namespace has routes for (the default route aside)."""
    out = subprocess.run(["ip", "-o", "-4", "route", "show"], capture_output=True, text=True, check=False).stdout
    nets = []
    for line in out.splitlines():
        dst = line.split()[0] if line.split() else "default"
        if dst != "default":
            with contextlib.suppress(ValueError):
                nets.append(ipaddress.IPv4Network(dst, strict=False))
    return nets


def free_lan(second_octets: Sequence[int], third_octet: int = 0, *, also_taken: Iterable[str] = ()) -> str:
    """A LAN for a lab that this process (by its pid) runs now: one that overlaps neither the
    service nor the cluster CIDR (the lab refuses those), nor a route the root namespace has
    (another lab's uplink), nor `also_taken`. Callers pass their own band of second octets so
    labs of different tests or benchmarks running at once do not collide."""
    taken = [ipaddress.IPv4Network(defaults.SERVICE_CIDR), ipaddress.IPv4Network(defaults.CLUSTER_CIDR),
             *root_routes(), *(ipaddress.IPv4Network(c) for c in also_taken)]
    lan = pick_lan(second_octets, third_octet, os.getpid() % max(1, len(second_octets)), taken)
    if lan is None:
        raise RuntimeError(f"no free 10.x.{third_octet}.0/24 for a lab, x in {second_octets}: every one overlaps "
                           "the service or cluster CIDR or a route of the root namespace")
    return lan


def make_lab(prefix: str, *, workers: int = 2, lan_cidr: str = defaults.LAB_LAN_CIDR, combined: bool = False,
             uplink: bool = True, host_routes: bool = False) -> LabNetwork:
    """The standard lab: `cp` at .10 and workers `n1`.. at .11..; `combined`: one host doing both."""
    if not prefix or len(prefix) > MAX_PREFIX or not prefix.replace("-", "").isalnum() or not prefix[0].isalpha():
        raise ValueError(f'lab prefix "{prefix}" must be 1-{MAX_PREFIX} letters, digits or "-", starting with a letter')
    net = ipaddress.ip_network(lan_cidr)
    if net.prefixlen > 26:
        raise ValueError(f"LAN {lan_cidr} is too small: use a /26 or larger")
    base = int(net.network_address)
    if combined:
        hosts: tuple[Host, ...] = (Host("node", str(ipaddress.ip_address(base + 10)), ("control-plane", "worker")),)
    else:
        control_plane = Host("cp", str(ipaddress.ip_address(base + 10)), ("control-plane",))
        workers_ = [Host(f"n{i}", str(ipaddress.ip_address(base + 10 + i))) for i in range(1, workers + 1)]
        hosts = (control_plane, *workers_)
    return LabNetwork(prefix=prefix, lan_cidr=lan_cidr, hosts=hosts, uplink=uplink,
                      host_routes_via=hosts[0].ip if host_routes else "")


Command = tuple[str, ...]


def plan_up(lab: LabNetwork) -> list[Command]:
    """Commands that build the lab network from nothing (run in order)."""
    lan = lab.lan_netns
    cmds: list[Command] = [
        ("ip", "netns", "add", lan),
        ("ip", "-n", lan, "link", "set", "lo", "up"),
        ("ip", "-n", lan, "link", "add", "br0", "type", "bridge"),
        ("ip", "-n", lan, "link", "set", "br0", "up"),
    ]
    for h in lab.hosts:
        if h.guest:
            continue
        ns = lab.netns(h.name)
        cmds += [
            ("ip", "netns", "add", ns),
            ("ip", "-n", lan, "link", "add", h.name, "type", "veth", "peer", "name", "eth0", "netns", ns),
            ("ip", "-n", lan, "link", "set", h.name, "master", "br0", "up"),
            ("ip", "-n", ns, "link", "set", "lo", "up"),
            ("ip", "-n", ns, "addr", "add", f"{h.ip}/{lab.prefixlen}", "dev", "eth0"),
            ("ip", "-n", ns, "link", "set", "eth0", "up"),
            # A host->ClusterIP connect() needs a route for the service CIDR before nat OUTPUT runs.
            ("ip", "-n", ns, "route", "add", lab.service_cidr, "dev", "eth0"),
        ]
        cmds += [("ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}={value}") for key, value in lab.sysctls]
    if lab.uplink:
        cmds += [
            ("ip", "link", "add", lab.uplink_name, "type", "veth", "peer", "name", "uplink", "netns", lan),
            ("ip", "-n", lan, "link", "set", "uplink", "master", "br0", "up"),
            ("ip", "addr", "add", f"{lab.uplink_ip}/{lab.prefixlen}", "dev", lab.uplink_name),
            ("ip", "link", "set", lab.uplink_name, "up"),
        ]
        if lab.host_routes_via:
            cmds += [
                ("ip", "route", "replace", lab.service_cidr, "via", lab.host_routes_via, "dev", lab.uplink_name),
                ("ip", "route", "replace", lab.cluster_cidr, "via", lab.host_routes_via, "dev", lab.uplink_name),
            ]
    return cmds


def plan_down(lab: LabNetwork) -> list[Command]:
    """Commands that remove the lab network; each may fail harmlessly if already gone."""
    cmds: list[Command] = []
    if lab.uplink:
        if lab.host_routes_via:
            cmds += [("ip", "route", "del", lab.service_cidr, "dev", lab.uplink_name),
                     ("ip", "route", "del", lab.cluster_cidr, "dev", lab.uplink_name)]
        cmds.append(("ip", "link", "del", lab.uplink_name))
    cmds += [("ip", "netns", "del", lab.netns(h.name)) for h in lab.hosts if not h.guest]
    cmds.append(("ip", "netns", "del", lab.lan_netns))
    return cmds


def guest_commands(lab: LabNetwork, host: str, *, device: str = "eth0") -> list[Command]:
    """What a guest host runs on its own kernel to be on the LAN as a namespace host is."""
    h = lab.host(host)
    return [
        ("ip", "addr", "add", f"{h.ip}/{lab.prefixlen}", "dev", device),
        ("ip", "link", "set", device, "up"),
        ("ip", "route", "add", lab.service_cidr, "dev", device),
        *[("sysctl", "-qw", f"{key}={value}") for key, value in lab.sysctls],
    ]


class NetworkError(RuntimeError):
    pass


def apply(cmds: Sequence[Command], *, ignore_errors: bool = False) -> list[str]:
    """Run the commands in order; stop at the first failure unless `ignore_errors`.

    Returns the error lines of commands that failed (only when ignoring errors).
    """
    failures: list[str] = []
    for cmd in cmds:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            line = f"{' '.join(cmd)}: {proc.stderr.strip() or f'exit {proc.returncode}'}"
            if not ignore_errors:
                raise NetworkError(line)
            failures.append(line)
    return failures


def existing_netns() -> set[str]:
    proc = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}


def route_device(address: str) -> str:
    """The device the root namespace would send `address` out of (`ip route get`)."""
    proc = subprocess.run(["ip", "-o", "route", "get", address], capture_output=True, text=True, check=False)
    words = proc.stdout.split()
    return words[words.index("dev") + 1] if "dev" in words else ""

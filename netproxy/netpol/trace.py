"""A packet tracer for the NetworkPolicy chains: would this new connection pass SKIFF-NETPOL?

Given rules (planned restore text, or iptables-save output of a real host) and a packet
(source, destination, protocol, port, conntrack state), it walks SKIFF-NETPOL with the packet
mark as iptables would and returns the verdict: "DROP" or "PASS" (the packet leaves the chain
and the rest of FORWARD/INPUT decides). What must hold: it understands exactly the matches and
targets the planner renders and raises TraceError on anything else, so a rule it cannot read
never passes silently.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass

from netproxy.iptables.ruleset import ParsedRules, parse
from netproxy.netpol.plan import MAIN


class TraceError(Exception):
    """The rules hold something the tracer does not model."""


@dataclass(frozen=True)
class Packet:
    src: str
    dst: str
    dport: int
    proto: str = "tcp"
    state: str = "NEW"


def _matches(args: list[str], pkt: Packet, mark: int) -> tuple[bool, str, list[str]]:
    """Whether the rule's matches hold; its target and the target's arguments."""
    i = 0
    ok = True
    while i < len(args):
        a = args[i]
        neg = a == "!"
        if neg:
            i += 1
            a = args[i]
        if a == "-m":
            i += 2
            continue
        if a == "--comment":
            i += 2
            continue
        if a == "-j":
            if not ok:
                return False, "", []
            return True, args[i + 1], args[i + 2:]
        value = args[i + 1]
        if a in ("-s", "-d"):
            addr = ipaddress.ip_address(pkt.src if a == "-s" else pkt.dst)
            hit = addr in ipaddress.ip_network(value, strict=False)
        elif a == "-p":
            hit = pkt.proto == value
        elif a == "--dport":
            low, _, high = value.partition(":")
            hit = int(low) <= pkt.dport <= int(high or low)
        elif a == "--ctstate":
            hit = pkt.state in value.split(",")
        elif a == "--mark":
            want, _, mask = value.partition("/")
            m = int(mask, 16) if mask else 0xFFFFFFFF
            hit = (mark & m) == int(want, 16)
        else:
            raise TraceError(f"unknown match {a!r}")
        ok = ok and (hit != neg)
        i += 2
    raise TraceError(f"rule without a target: {' '.join(args)}")


def trace(rules: str | ParsedRules, pkt: Packet) -> str:
    """"DROP" or "PASS" for `pkt` entering SKIFF-NETPOL (none: "PASS")."""
    parsed = parse(rules) if isinstance(rules, str) else rules
    if ("filter", MAIN) not in parsed.chains:
        return "PASS"
    mark = 0

    def walk(chain: str, depth: int) -> str | None:
        nonlocal mark
        if depth > 8:
            raise TraceError(f"jumps nested too deep at {chain}")
        for line in parsed.rules("filter", chain):
            hit, target, rest = _matches(shlex.split(line)[2:], pkt, mark)
            if not hit:
                continue
            if target == "RETURN":
                return None
            if target == "DROP":
                return "DROP"
            if target == "MARK":
                if rest[:1] != ["--set-xmark"]:
                    raise TraceError(f"unknown MARK arguments {rest}")
                value, _, mask = rest[1].partition("/")
                mark = (mark & ~int(mask, 16)) ^ int(value, 16)
                continue
            if ("filter", target) not in parsed.chains:
                raise TraceError(f"jump to a missing chain {target}")
            verdict = walk(target, depth + 1)
            if verdict is not None:
                return verdict
        return None

    return walk(MAIN, 0) or "PASS"

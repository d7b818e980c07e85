"""A packet tracer: walks a ruleset for one new connection and says where it can end up.

Given rules (rendered restore text, or iptables-save output of a real host) and a packet
(source, destination, protocol, port) entering from a pod (nat PREROUTING) or sent by the
node itself (nat OUTPUT), it follows every path — each `-m statistic --probability p` rule
splits the path in two — through nat, filter, and nat POSTROUTING, and returns the possible
outcomes with their probabilities: the DNAT destination, whether the connection is
masqueraded, and the verdict (ACCEPT, REJECT, DROP).

What must hold: it understands exactly the matches and targets netproxy renders and raises
TraceError on anything else, so a rule it cannot read never passes silently. It models the
first packet of a connection (conntrack state NEW) and the kernel's order of tables; it
does not model routing beyond "is the destination a local address".
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, replace

from netproxy.iptables.layout import HOOKS
from netproxy.iptables.ruleset import BUILTIN_CHAINS, ParsedRules, parse

TERMINAL = ("ACCEPT", "DROP", "REJECT")


class TraceError(Exception):
    """The rules hold something the tracer does not model."""


@dataclass(frozen=True)
class Packet:
    src: str
    dst: str
    dport: int
    proto: str = "tcp"


@dataclass(frozen=True)
class Outcome:
    probability: float
    verdict: str  # ACCEPT, REJECT or DROP
    destination: str | None  # "ip:port" after DNAT; None when not DNATed
    masquerade: bool


@dataclass
class _Path:
    probability: float
    dst: str
    dport: int
    mark: int = 0
    verdict: str = ""  # "" while undecided within a table walk
    dnat: str | None = None
    masquerade: bool = False
    recent_set: frozenset[str] = field(default_factory=frozenset)

    def fork(self, probability: float) -> _Path:
        return replace(self, probability=probability)


def _in_net(ip: str, net: str) -> bool:
    return ipaddress.ip_address(ip) in ipaddress.ip_network(net, strict=False)


def _int(text: str) -> int:
    return int(text, 0)


class Tracer:
    def __init__(self, rules: ParsedRules | str, *, local_addresses: Collection[str] = (),
                 recent: Collection[str] = (), with_hooks: bool | None = None) -> None:
        """`recent`: `-m recent` lists that already hold this source (ClientIP affinity state).

        `with_hooks` adds netproxy's jumps from built-in chains; by default, when the rules
        have none of their own (rendered text rather than iptables-save output).
        """
        self.rules = parse(rules) if isinstance(rules, str) else rules
        self.local = set(local_addresses)
        self.recent = frozenset(recent)
        builtin_rules = any(self.rules.rules(t, c) for t, chains in BUILTIN_CHAINS.items() for c in chains)
        if with_hooks if with_hooks is not None else not builtin_rules:
            for hook in HOOKS:
                line = f"-A {hook.chain} " + " ".join(shlex.quote(a) for a in hook.args)
                self.rules.chains.setdefault((hook.table, hook.chain), []).append(line)

    def is_local(self, ip: str) -> bool:
        return ip in self.local or _in_net(ip, "127.0.0.0/8")

    # ------------------------------------------------------------------ one rule

    def _match(self, args: list[str], packet: Packet, path: _Path, table: str
               ) -> tuple[list[tuple[_Path, bool]], int]:
        """Split `path` by the rule's matches: [(path, matched)], and the index of `-j`."""
        results: list[tuple[_Path, bool]] = [(path, True)]
        negate = False
        recent_name = args[args.index("--name") + 1] if "--name" in args else ""
        set_recent = False
        i = 0
        while i < len(args):
            a = args[i]
            if a == "-j":
                break
            if a == "!":
                negate = True
                i += 1
                continue
            value = args[i + 1] if i + 1 < len(args) else ""
            step = 2
            cond: bool | None = None
            if a in ("-s", "--source"):
                cond = _in_net(packet.src, value)
            elif a in ("-d", "--destination"):
                cond = _in_net(path.dst, value)
            elif a in ("-p", "--protocol"):
                cond = packet.proto == value
            elif a == "-m" or a == "--comment" or a == "--mode" or a == "--seconds" or a == "--mask":
                cond = None
            elif a in ("--reap", "--rsource"):
                step = 1
            elif a == "--dport":
                cond = path.dport == int(value)
            elif a in ("--dst-type", "--src-type"):
                if value != "LOCAL":
                    raise TraceError(f"{a} {value} is not modelled")
                cond = self.is_local(path.dst if a == "--dst-type" else packet.src)
            elif a == "--ctstate":
                cond = "NEW" in value.split(",")
            elif a == "--mark":
                want, _, mask = value.partition("/")
                cond = path.mark & _int(mask or "0xffffffff") == _int(want)
            elif a == "--name":
                pass
            elif a == "--rcheck":
                cond = recent_name in self.recent or recent_name in path.recent_set
                step = 1
            elif a == "--set":
                set_recent = True
                step = 1
            elif a == "--probability":
                p = float(value)
                if negate:
                    raise TraceError("! --probability is not modelled")
                results = [x for pth, m in results for x in (
                    [(pth.fork(pth.probability * p), True), (pth.fork(pth.probability * (1 - p)), False)]
                    if m else [(pth, False)])]
            else:
                raise TraceError(f"{table}: option {a} is not modelled")
            if cond is not None:
                ok = cond != negate
                results = [(pth, m and ok) for pth, m in results]
            negate = False
            i += step
        if set_recent:  # `-m recent --set` records the source when the rest of the rule matches
            results = [(replace(p, recent_set=p.recent_set | {recent_name}) if m else p, m) for p, m in results]
        return results, i

    def _target(self, table: str, target: str, opts: list[str], packet: Packet, path: _Path,
                depth: int) -> list[_Path]:
        """Apply a target; returned paths with verdict "" continue with the next rule,
        verdict "RETURN" return from the chain, others end the table walk."""
        def opt(name: str) -> str:
            if name not in opts:
                raise TraceError(f"-j {target} without {name}")
            return opts[opts.index(name) + 1]

        if target in TERMINAL:
            return [replace(path, verdict=target)]
        if target == "RETURN":
            return [replace(path, verdict="RETURN")]
        if target == "MARK":
            if "--or-mark" in opts:
                return [replace(path, mark=path.mark | _int(opt("--or-mark")))]
            if "--xor-mark" in opts:
                return [replace(path, mark=path.mark ^ _int(opt("--xor-mark")))]
            if "--set-xmark" in opts:  # how iptables-save prints both of the above
                value, _, mask = opt("--set-xmark").partition("/")
                m = _int(mask or "0xffffffff")
                return [replace(path, mark=(path.mark & ~m) ^ _int(value))]
            raise TraceError(f"-j MARK {' '.join(opts)} is not modelled")
        if target == "DNAT":
            if table != "nat":
                raise TraceError("DNAT outside the nat table")
            to = opt("--to-destination")
            ip, _, port = to.rpartition(":")
            return [replace(path, dst=ip, dport=int(port), dnat=to, verdict="ACCEPT")]
        if target == "MASQUERADE":
            return [replace(path, masquerade=True, verdict="ACCEPT")]
        if (table, target) in self.rules.chains:
            out: list[_Path] = []
            for p in self._walk(table, target, packet, path, depth + 1):
                out.append(replace(p, verdict="") if p.verdict == "RETURN" else p)
            return out
        raise TraceError(f"{table}: target {target} is not modelled")

    # ------------------------------------------------------------------ chains

    def _walk(self, table: str, chain: str, packet: Packet, path: _Path, depth: int = 0) -> list[_Path]:
        """Walk `chain`: paths that fell off its end (verdict "") or were decided."""
        if depth > 50:
            raise TraceError(f"{table}: chain loop through {chain}")
        live = [path]
        done: list[_Path] = []
        for line in self.rules.rules(table, chain):
            args = shlex.split(line)[2:]
            nxt: list[_Path] = []
            for p in live:
                branches, j = self._match(args, packet, p, table)
                for branch, matched in branches:
                    if not matched or j >= len(args):
                        nxt.append(branch)
                        continue
                    for r in self._target(table, args[j + 1], args[j + 2:], packet, branch, depth):
                        (done if r.verdict else nxt).append(r)
            live = nxt
            if not live:
                break
        return done + live

    def _builtin(self, table: str, chain: str, packet: Packet, paths: list[_Path]) -> list[_Path]:
        out: list[_Path] = []
        for p in paths:
            for r in self._walk(table, chain, packet, p):
                # Falling off a built-in chain or RETURN from it applies the policy (ACCEPT here).
                out.append(replace(r, verdict="") if r.verdict in ("", "RETURN", "ACCEPT") else r)
        return out

    def trace(self, packet: Packet, *, origin: str = "pod") -> list[Outcome]:
        """Possible outcomes of a new connection, merged, most likely first."""
        if origin not in ("pod", "node"):
            raise ValueError("origin is 'pod' (arrives on an interface) or 'node' (sent by the node)")
        paths = [_Path(1.0, packet.dst, packet.dport)]
        paths = self._builtin("nat", "PREROUTING" if origin == "pod" else "OUTPUT", packet, paths)
        finished: list[_Path] = []
        for p in paths:
            local = self.is_local(p.dst)
            chains = (["OUTPUT"] if origin == "node" else []) + (["INPUT"] if local else
                                                                 ([] if origin == "node" else ["FORWARD"]))
            cur = [p]
            for chain in chains:
                cur = self._builtin("filter", chain, packet, [c for c in cur if not c.verdict])
            for c in cur:
                if c.verdict or local:
                    finished.append(c)
                else:
                    finished.extend(self._builtin("nat", "POSTROUTING", packet, [c]))
        merged: dict[tuple[str, str | None, bool], float] = {}
        for p in finished:
            key = (p.verdict or "ACCEPT", p.dnat, p.masquerade)
            merged[key] = merged.get(key, 0.0) + p.probability
        outcomes = [Outcome(round(prob, 9), v, d, m) for (v, d, m), prob in merged.items()]
        return sorted(outcomes, key=lambda o: (-o.probability, o.verdict, o.destination or "", o.masquerade))


def destinations(outcomes: Iterable[Outcome]) -> dict[str | None, float]:
    """Probability per DNAT destination among accepted outcomes."""
    out: dict[str | None, float] = {}
    for o in outcomes:
        if o.verdict == "ACCEPT":
            out[o.destination] = round(out.get(o.destination, 0.0) + o.probability, 9)
    return out

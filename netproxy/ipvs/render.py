"""IPVS mode, the iptables part: which connections to masquerade (IPVS itself only DNATs).

- nat KUBE-SERVICES: mark ClusterIP connections from outside the cluster CIDR; local
  destinations jump to KUBE-NODEPORTS, which marks every NodePort connection (with
  externalTrafficPolicy Local only the node's own);
- nat KUBE-POSTROUTING: first masquerade hairpin connections (an endpoint reaching itself
  through its Service: source and destination are the endpoint after IPVS's DNAT), then the
  marked ones (the same base rules as iptables mode).
The fixed chains and jumps are the iptables mode's, so switching modes needs no other hooks.
Pure and deterministic, like the iptables renderer. `RulesetBuilder` keeps the last build
between syncs like the iptables mode's: each service port's lines are rendered once, and the
three chains are joined again only when a changed service port's lines in them changed (an
endpoint change rejoins KUBE-POSTROUTING only); the same ruleset as `build_ruleset`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from netproxy.config import ProxyConfig
from netproxy.iptables.layout import MARK_MASQ, NODEPORTS, POSTROUTING, SERVICES, base_ruleset, comment
from netproxy.iptables.render import nodeports_jumps
from netproxy.iptables.ruleset import ChainEdit, ChainKey, Changes, Ruleset
from netproxy.model import ServicePort


@dataclass(frozen=True)
class _Fragment:
    """One service port's lines: in KUBE-SERVICES, KUBE-NODEPORTS, and its hairpin candidates."""

    services: tuple[str, ...]
    nodeports: tuple[str, ...]
    hairpin: tuple[tuple[tuple[str, str, int], str], ...]  # ((endpoint ip, proto, port), rule)


def _fragment(sp: ServicePort, config: ProxyConfig) -> _Fragment:
    dest = f"-d {sp.cluster_ip}/32 -p {sp.proto} -m {sp.proto} --dport {sp.port}"
    services: tuple[str, ...] = ()
    if config.masquerade_all:
        services = (f'-A {SERVICES} {comment(sp.key + " cluster IP")} {dest} -j {MARK_MASQ}',)
    elif config.cluster_net:
        services = (f'-A {SERVICES} {comment(sp.key + " cluster IP")} ! -s {config.cluster_net} {dest} '
                    f"-j {MARK_MASQ}",)
    nodeports: tuple[str, ...] = ()
    if sp.node_port:
        # externalTrafficPolicy Local keeps the client's address: only the node's own
        # connections are masqueraded.
        local = "-m addrtype --src-type LOCAL " if sp.external_local else ""
        nodeports = (f"-A {NODEPORTS} {comment(sp.key)} {local}-p {sp.proto} -m {sp.proto} "
                     f"--dport {sp.node_port} -j {MARK_MASQ}",)
    hairpin = tuple(((ep.ip, sp.proto, ep.port),
                     f'-A {POSTROUTING} {comment(sp.key + " hairpin")} -s {ep.ip}/32 -d {ep.ip}/32 '
                     f"-p {sp.proto} -m {sp.proto} --dport {ep.port} -j MASQUERADE") for ep in sp.endpoints)
    return _Fragment(services, nodeports, hairpin)


def _join(frags: Iterable[_Fragment], config: ProxyConfig, *, top: bool = True,
          post: bool = True) -> dict[ChainKey, tuple[str, ...]]:
    """The shared chains from the fragments in service-port order (`top`: KUBE-SERVICES and
    KUBE-NODEPORTS; `post`: KUBE-POSTROUTING)."""
    frags = list(frags)
    out: dict[ChainKey, tuple[str, ...]] = {}
    if top:
        out[("nat", SERVICES)] = tuple(line for f in frags for line in f.services) + tuple(nodeports_jumps(config))
        out[("nat", NODEPORTS)] = tuple(line for f in frags for line in f.nodeports)
    if post:
        hairpin: dict[tuple[str, str, int], str] = {}
        for f in frags:
            for key, line in f.hairpin:
                hairpin.setdefault(key, line)  # the first service port naming an endpoint owns its rule
        out[("nat", POSTROUTING)] = tuple(hairpin.values()) + tuple(base_ruleset().chains[("nat", POSTROUTING)])
    return out


def build_ruleset(sps: Iterable[ServicePort], config: ProxyConfig) -> Ruleset:
    rs = base_ruleset()
    rs.chains.update(_join((_fragment(sp, config) for sp in sps), config))
    return rs


class RulesetBuilder:
    """`build_ruleset` kept current between syncs (module docstring); with the Changes since the last build."""

    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self._by_id: dict[int, tuple[ServicePort, _Fragment]] = {}
        self._sps: Collection[ServicePort] | None = None
        self._built: Ruleset | None = None

    def build(self, sps: Collection[ServicePort]) -> tuple[Ruleset, Changes | None]:
        previous = self._built
        if previous is not None and sps is self._sps:
            return previous, Changes(previous.frozen(), frozenset())
        current = dict(zip(map(id, sps), sps, strict=True))
        before = self._by_id.keys()
        removed = [self._by_id.pop(i)[1] for i in before - current.keys()]
        added = []
        for i in current.keys() - before:
            frag = _fragment(current[i], self.config)
            self._by_id[i] = (current[i], frag)
            added.append(frag)
        edit = ChainEdit(previous)
        if previous is None:
            for key, rules in base_ruleset().frozen().items():
                edit.put(key, rules)
        top = previous is None or (Counter((f.services, f.nodeports) for f in removed)
                                   != Counter((f.services, f.nodeports) for f in added))
        post = previous is None or Counter(f.hairpin for f in removed) != Counter(f.hairpin for f in added)
        if top or post:
            for key, rules in _join((self._by_id[id(sp)][1] for sp in sps), self.config, top=top, post=post).items():
                edit.put(key, rules)
        self._sps, (self._built, changes) = sps, edit.seal()
        return self._built, changes

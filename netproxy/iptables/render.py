"""iptables mode: the whole ruleset (nat and filter) for a set of ServicePorts, as data or text.

Layout (kube-proxy's iptables proxier, see docs/netproxy.md for a dump):
- nat KUBE-SERVICES (from PREROUTING and OUTPUT): per served port `-d VIP -p P --dport N -j
  KUBE-SVC-x`; last, local destinations jump to KUBE-NODEPORTS;
- KUBE-NODEPORTS: per NodePort, mark for masquerade, then the service chain;
- KUBE-SVC-x: mark traffic from outside the cluster CIDR for masquerade; with ClientIP
  affinity, send a client back to the endpoint it used (`-m recent --rcheck`); then pick an
  endpoint at random with probabilities 1/n, 1/(n-1), ..., 1;
- KUBE-SEP-y: mark hairpin traffic (the endpoint reaching itself) for masquerade; DNAT;
- traffic policies Local (kube-proxy's layout): KUBE-SVL-x picks among this node's endpoints
  only; `internalTrafficPolicy: Local` sends ClusterIP traffic there (or DROPs it in filter
  KUBE-SERVICES when the node has none); `externalTrafficPolicy: Local` sends NodePort
  traffic to KUBE-EXT-x, which keeps pods' and the node's own connections on the whole
  Service (the node's masqueraded) and sends the rest, unmasqueraded (the client's address
  preserved), to KUBE-SVL-x; with no local endpoint filter KUBE-EXTERNAL-SERVICES DROPs what
  was not DNATed;
- filter KUBE-SERVICES / KUBE-EXTERNAL-SERVICES: REJECT ports of Services without ready
  endpoints, so clients fail at once instead of timing out.

What must hold: `render` and `build_ruleset` are pure; the same input gives the same text;
every rule carries a comment naming its service port ("ns/svc:port") or its purpose — except,
in large-cluster mode (more endpoints than `ProxyConfig.large_cluster_endpoints`, kube-proxy's
rule), the per-endpoint rules: the KUBE-SEP chains' rules and the rules picking an endpoint in
KUBE-SVC/KUBE-SVL chains. Those are three of every four rules, and their comments most of the
bytes iptables-restore parses and iptables-legacy copies; the chains they sit in are still
named by the service port's hash and entered only from commented rules.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, MutableMapping
from dataclasses import dataclass, field

from netproxy.config import ProxyConfig
from netproxy.iptables.layout import (
    EXTERNAL_SERVICES,
    MARK_MASQ,
    NODEPORTS,
    SERVICES,
    base_ruleset,
    comment,
)
from netproxy.iptables.ruleset import ChainEdit, ChainKey, Changes, Ruleset, count_rules, stale_chains
from netproxy.model import Endpoint, ServicePort, ext_chain, sep_chain, service_ports, svc_chain, svl_chain
from skiffpb.api.v1 import types_pb2 as t


@dataclass
class Fragment:
    """The rules one ServicePort contributes; cached by (ServicePort, ProxyConfig)."""

    nat_services: list[str] = field(default_factory=list)
    nat_nodeports: list[str] = field(default_factory=list)
    filter_services: list[str] = field(default_factory=list)
    filter_external: list[str] = field(default_factory=list)
    chains: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)  # own nat chains


FragmentCache = MutableMapping[ServicePort, Fragment]  # valid for one ProxyConfig


def _dest(sp: ServicePort) -> str:
    return f"-d {sp.cluster_ip}/32 -p {sp.proto} -m {sp.proto} --dport {sp.port}"


def _nodeport(sp: ServicePort) -> str:
    return f"-p {sp.proto} -m {sp.proto} --dport {sp.node_port}"


def large_cluster(sps: Collection[ServicePort], config: ProxyConfig) -> bool:
    """kube-proxy's large-cluster mode: more endpoints than the threshold, endpoint rules uncommented."""
    return sum(len(sp.endpoints) for sp in sps) > config.large_cluster_endpoints


def _pick(chain: str, sp: ServicePort, endpoints: tuple[Endpoint, ...], *, large: bool) -> list[str]:
    """Rules choosing one of `endpoints` (ClientIP affinity first, then equal probabilities)."""
    key = sp.key
    seps = [(ep, sep_chain(sp, ep), "" if large else comment(f"{key} -> {ep}") + " ") for ep in endpoints]
    rules: list[str] = []
    if sp.affinity_timeout:
        for _, sep, note in seps:
            rules.append(f"-A {chain} {note}-m recent --name {sep} --rcheck "
                         f"--seconds {sp.affinity_timeout} --reap -j {sep}")
    n = len(seps)
    for i, (_, sep, note) in enumerate(seps):
        remaining = n - i
        stat = f"-m statistic --mode random --probability {1.0 / remaining:.10f} " if remaining > 1 else ""
        rules.append(f"-A {chain} {note}{stat}-j {sep}")
    return rules


def fragment(sp: ServicePort, config: ProxyConfig, *, large: bool = False) -> Fragment:
    """The rules of one ServicePort; `large`: large-cluster mode (endpoint rules without comments)."""
    f = Fragment()
    key = sp.key
    if not sp.endpoints:
        f.filter_services.append(f'-A {SERVICES} {comment(key + " has no endpoints")} {_dest(sp)} -j REJECT')
        if sp.node_port:
            f.filter_external.append(f'-A {EXTERNAL_SERVICES} {comment(key + " has no endpoints")} '
                                     f"-m addrtype --dst-type LOCAL {_nodeport(sp)} -j REJECT")
        return f
    svc = svc_chain(sp)
    svl = svl_chain(sp)
    if not sp.internal_local:
        f.nat_services.append(f'-A {SERVICES} {comment(key + " cluster IP")} {_dest(sp)} -j {svc}')
    elif sp.local_endpoints:
        f.nat_services.append(f'-A {SERVICES} {comment(key + " cluster IP")} {_dest(sp)} -j {svl}')
    else:
        f.filter_services.append(f'-A {SERVICES} {comment(key + " has no local endpoints")} {_dest(sp)} -j DROP')
    if sp.node_port and sp.external_local:
        f.nat_nodeports.append(f"-A {NODEPORTS} {comment(key)} {_nodeport(sp)} -j {ext_chain(sp)}")
        if not sp.local_endpoints:
            f.filter_external.append(f'-A {EXTERNAL_SERVICES} {comment(key + " has no local endpoints")} '
                                     f"-m addrtype --dst-type LOCAL {_nodeport(sp)} -j DROP")
    elif sp.node_port:
        f.nat_nodeports.append(f"-A {NODEPORTS} {comment(key)} {_nodeport(sp)} -j {MARK_MASQ}")
        f.nat_nodeports.append(f"-A {NODEPORTS} {comment(key)} {_nodeport(sp)} -j {svc}")
    svc_rules: list[str] = []
    if config.masquerade_all:
        svc_rules.append(f'-A {svc} {comment(key + " cluster IP")} {_dest(sp)} -j {MARK_MASQ}')
    elif config.cluster_net:
        svc_rules.append(f'-A {svc} {comment(key + " cluster IP")} ! -s {config.cluster_net} {_dest(sp)} '
                         f"-j {MARK_MASQ}")
    svc_rules.extend(_pick(svc, sp, sp.endpoints, large=large))
    f.chains.append((svc, tuple(svc_rules)))
    note = "" if large else comment(key) + " "
    for ep in sp.endpoints:
        sep = sep_chain(sp, ep)
        recent = f"-m recent --name {sep} --set " if sp.affinity_timeout else ""
        f.chains.append((sep, (
            f"-A {sep} {note}-s {ep.ip}/32 -j {MARK_MASQ}",
            f"-A {sep} {note}-p {sp.proto} {recent}-m {sp.proto} -j DNAT --to-destination {ep}",
        )))
    if sp.local_endpoints:
        f.chains.append((svl, tuple(_pick(svl, sp, sp.local_endpoints, large=large))))
    if sp.node_port and sp.external_local:
        ext = ext_chain(sp)
        ext_rules: list[str] = []
        # Pods and the node itself reaching a NodePort are not "external": the whole Service.
        if config.cluster_net:
            ext_rules.append(f'-A {ext} {comment(f"pod traffic for {key} external destinations")} '
                             f"-s {config.cluster_net} -j {svc}")
        ext_rules.append(f'-A {ext} {comment(f"masquerade LOCAL traffic for {key} external destinations")} '
                         f"-m addrtype --src-type LOCAL -j {MARK_MASQ}")
        ext_rules.append(f'-A {ext} {comment(f"route LOCAL traffic for {key} external destinations")} '
                         f"-m addrtype --src-type LOCAL -j {svc}")
        if sp.local_endpoints:
            ext_rules.append(f"-A {ext} {comment(key)} -j {svl}")
        f.chains.append((ext, tuple(ext_rules)))
    return f


def nodeports_jumps(config: ProxyConfig) -> list[str]:
    text = comment("kubernetes service nodeports; NOTE: this must be the last rule in this chain")
    if config.nodeport_addresses:
        return [f"-A {SERVICES} {text} -d {cidr} -j {NODEPORTS}" for cidr in config.nodeport_addresses]
    # 127/8 is left out: DNAT from a loopback source to a pod needs route_localnet.
    return [f"-A {SERVICES} {text} ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j {NODEPORTS}"]


def build_ruleset(sps: Collection[ServicePort], config: ProxyConfig, *, cache: FragmentCache | None = None,
                  large: bool | None = None) -> Ruleset:
    """The full ruleset; `cache` (kept by the caller, one per config and mode) memoises per ServicePort.

    `large`: large-cluster mode; None decides it from `sps` (`large_cluster`). A caller keeping
    a cache passes the mode and empties the cache when it changes.
    """
    if large is None:
        large = large_cluster(sps, config)
    frags: list[Fragment] = []
    for sp in sps:
        if cache is None:
            frags.append(fragment(sp, config, large=large))
            continue
        frag = cache.get(sp)
        if frag is None:
            frag = cache[sp] = fragment(sp, config, large=large)
        frags.append(frag)
    rs = base_ruleset()
    rs.chains.update(_top_chains(frags, config))
    for frag in frags:
        for chain, rules in frag.chains:
            rs.chains[("nat", chain)] = rules
    return rs


def _top_chains(frags: Iterable[Fragment], config: ProxyConfig) -> dict[ChainKey, list[str]]:
    """The chains every service port adds a rule to, in the order of `frags`."""
    filter_services: list[str] = []
    filter_external: list[str] = []
    nat_services: list[str] = []
    nat_nodeports: list[str] = []
    for frag in frags:
        filter_services.extend(frag.filter_services)
        filter_external.extend(frag.filter_external)
        nat_services.extend(frag.nat_services)
        nat_nodeports.extend(frag.nat_nodeports)
    nat_services.extend(nodeports_jumps(config))
    return {("filter", SERVICES): filter_services, ("filter", EXTERNAL_SERVICES): filter_external,
            ("nat", SERVICES): nat_services, ("nat", NODEPORTS): nat_nodeports}


def _top_rules(frag: Fragment) -> tuple[tuple[str, ...], ...]:
    return (tuple(frag.filter_services), tuple(frag.filter_external), tuple(frag.nat_services),
            tuple(frag.nat_nodeports))


class RulesetBuilder:
    """`build_ruleset` kept current between syncs, at the cost of what changed.

    What must hold: `build(sps)` gives a ruleset equal (chain by chain; the chains' order may
    differ) to `build_ruleset(sps, config)`; unchanged chains are the very tuples of the previous
    build; with a previous build it also gives the `Changes` since it. One endpoint change among
    thousands of Services renders one service port and touches a handful of chains: no walk over
    every chain, which in Python costs more than iptables-restore's own work for that change.
    A change of large-cluster mode, or the first build, renders everything (Changes None).
    """

    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self._by_id: dict[int, tuple[ServicePort, Fragment]] = {}  # id(ServicePort) -> it and its fragment
        self._large = False
        self._sps: Collection[ServicePort] | None = None  # the input of the last build
        self._built: Ruleset | None = None

    def build(self, sps: Collection[ServicePort]) -> tuple[Ruleset, Changes | None]:
        previous = self._built
        if previous is not None and sps is self._sps:
            return previous, Changes(previous.frozen(), frozenset())
        large = large_cluster(sps, self.config)
        if previous is None or large != self._large:
            return self._rebuild(sps, large), None
        # By identity, in C (map/zip, no __hash__ call per port): unchanged service ports are the
        # very objects of the last build (ServicePortTable keeps them), and an equal new object
        # only costs a re-render. Ids are not reused while _by_id holds the old objects.
        current = dict(zip(map(id, sps), sps, strict=True))
        before = self._by_id.keys()
        removed = [self._by_id.pop(i)[1] for i in before - current.keys()]
        added = []
        for i in current.keys() - before:
            frag = fragment(current[i], self.config, large=large)
            self._by_id[i] = (current[i], frag)
            added.append(frag)
        edit = ChainEdit(previous)
        for frag in removed:
            for chain, _ in frag.chains:
                edit.put(("nat", chain), None)
        for frag in added:
            for chain, own in frag.chains:
                edit.put(("nat", chain), own)
        # A service port's rules in the shared chains name it: equal multisets of them mean the
        # shared chains are unchanged (an endpoint change); otherwise they are joined again.
        if Counter(map(_top_rules, removed)) != Counter(map(_top_rules, added)):
            for key, joined in _top_chains((self._by_id[id(sp)][1] for sp in sps), self.config).items():
                edit.put(key, tuple(joined))
        built, changes = edit.seal()
        self._sps, self._built = sps, built
        return built, changes

    def _rebuild(self, sps: Collection[ServicePort], large: bool) -> Ruleset:
        frags: dict[ServicePort, Fragment] = {}
        self._large = large
        frozen = build_ruleset(sps, self.config, cache=frags, large=large).frozen()
        self._by_id = {id(sp): (sp, frags[sp]) for sp in sps}
        self._sps, self._built = sps, Ruleset.sealed(frozen, count_rules(frozen))
        return self._built


def render(services: Iterable[t.Service], endpoints: Iterable[t.Endpoints], config: ProxyConfig, *,
           previous_chains: Iterable[ChainKey] = ()) -> str:
    """The whole ruleset as `iptables-restore --noflush` input.

    `previous_chains` are the chains present before (in the kernel, or last applied): those
    netproxy owns and no longer renders are declared and deleted in the same text.
    """
    sps, _ = service_ports(services, endpoints)
    rs = build_ruleset(sps, config)
    return rs.restore_text(delete=stale_chains(previous_chains, rs))

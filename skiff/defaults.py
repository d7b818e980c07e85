"""The cluster's defaults, written once: address ranges, the NodePort range and the daemons' ports.

Every daemon flag, config dataclass, lab and doc that has a default for one of these imports
it from here, so a default changes in one place.

What must hold:
- the default ranges do not overlap each other, nor the LANs the labs put their hosts on
  (`LAB_LAN_CIDR`, `LOCAL_LAN_CIDR`): a ClusterIP or pod IP equal to a host's address is
  unreachable or, worse, reaches the wrong machine. `overlaps()` finds such pairs, and the
  api-server and the labs refuse to start with one (`check_disjoint`);
- the values follow Kubernetes where Kubernetes has one (10.96.0.0/12, 30000-32767, 6443,
  2379/2380, 10250).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from skiffpb.api.v1 import types_pb2 as t

SERVICE_CIDR = "10.96.0.0/12"  # ClusterIPs: 10.96.0.0 - 10.111.255.255
CLUSTER_CIDR = "10.244.0.0/16"  # pod IPs; each node gets a /NODE_CIDR_MASK_SIZE of it
NODE_CIDR_MASK_SIZE = 24
NODE_PORT_MIN, NODE_PORT_MAX = 30000, 32767
NODE_PORT_RANGE = f"{NODE_PORT_MIN}-{NODE_PORT_MAX}"

STORE_CLIENT_PORT = 2379
STORE_PEER_PORT = 2380
API_PORT = 6443
KUBE_API_PORT = 8443  # the Kubernetes REST API (HTTP) beside the gRPC API; 6443 is gRPC's
AGENT_PORT = 10250
# Each daemon's /metrics, /healthz, /livez and /readyz (--metrics-bind-address, loopback by
# default; docs/observability.md). Upstream's ports where upstream has one: etcd's metrics URL,
# kube-controller-manager's and kube-scheduler's secure ports, the kubelet's read-only port,
# kube-proxy's metrics port, CoreDNS's prometheus plugin. The api-server also serves them on its
# REST port, as kube-apiserver does. Several store members or api-servers on one host shift theirs
# as their other ports do (+100 per store slot, +1 per api-server slot).
STORE_METRICS_PORT = 2381
APISERVER_METRICS_PORT = 8080
CONTROLLERS_METRICS_PORT = 10257
SCHEDULER_METRICS_PORT = 10259
AGENT_METRICS_PORT = 10255
PROXY_METRICS_PORT = 10249
CLUSTERDNS_METRICS_PORT = 9153

# Where node agents keep their heartbeat Leases (one per node, named after it).
NODE_LEASE_NAMESPACE = "kube-node-lease"
# Namespaces every cluster has from its first start; none of them can be deleted.
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", NODE_LEASE_NAMESPACE)
# Cluster DNS: the domain, and the address every host's node-local clusterdns listens on. It is
# link-local and the same on every host (NodeLocal DNSCache's address): pods are told this one
# nameserver and each host's pods ask their own host's server.
CLUSTER_DOMAIN = "cluster.local"
NODE_LOCAL_DNS_IP = "169.254.20.10"
NODE_LOCAL_DNS_INTERFACE = "lo"  # a /32 there is local to the host for packets from its pods

# The LANs of the network-namespace labs (deploy/): outside every range above.
LAB_LAN_CIDR = "10.77.0.0/24"  # `skiff lab up`
LOCAL_LAN_CIDR = "10.78.0.0/24"  # `make up`

# A Deployment or ReplicaSet without spec.replicas wants one; the api-server writes it in.
REPLICAS = 1


def replicas(spec: t.DeploymentSpec | t.ReplicaSetSpec) -> int:
    """spec.replicas of a Deployment or ReplicaSet spec, REPLICAS when unset.

    Objects read from the api-server always carry it (defaulting); objects built in code or
    read from a file may not.
    """
    return spec.replicas if spec.HasField("replicas") else REPLICAS


Named = tuple[str, str]  # (what it is, CIDR or address): ("service CIDR", "10.96.0.0/12")


def overlaps(ranges: Sequence[Named], others: Sequence[Named] = ()) -> list[tuple[str, str]]:
    """The pairs that share an address, each side as "what CIDR": [("service CIDR 10.96.0.0/12",
    "LAN 10.99.0.0/24")]. Every pair among `ranges` is compared, and each of `ranges` with each of
    `others` (never two of `others`: a host's own networks may overlap each other).

    An address without a prefix length counts as one address; invalid ones raise ValueError
    (callers validate their own flags first).
    """
    nets = [(name, ipaddress.ip_network(cidr, strict=False)) for name, cidr in ranges]
    rest = [(name, ipaddress.ip_network(cidr, strict=False)) for name, cidr in others]
    out = []
    for i, (name_a, a) in enumerate(nets):
        for name_b, b in nets[i + 1:] + rest:
            if a.version == b.version and a.overlaps(b):  # type: ignore[arg-type]
                out.append((f"{name_a} {a}", f"{name_b} {b}"))
    return out


def check_disjoint(ranges: Sequence[Named], others: Sequence[Named] = ()) -> None:
    """Raise ValueError naming both ranges of every overlapping pair (see `overlaps`)."""
    pairs = overlaps(ranges, others)
    if pairs:
        raise ValueError("; ".join(f"{a} overlaps {b}" for a, b in pairs)
                         + ": a ClusterIP or pod IP could be a host's address; choose ranges that do not overlap")

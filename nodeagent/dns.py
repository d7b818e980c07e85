"""A pod's resolver configuration and /etc/hosts (pure), as the kubelet computes them.

What must hold:
- dnsPolicy ClusterFirst (the default) gives a pod the cluster DNS server, the search list
  `<ns>.svc.<domain> svc.<domain> <domain>` followed by the host's searches, and `ndots:5`;
  a hostNetwork pod with ClusterFirst gets the host's configuration instead (as in Kubernetes;
  ClusterFirstWithHostNet is the policy that gives it the cluster DNS); with no cluster DNS
  configured, ClusterFirst falls back to the host's configuration;
- Default is the host's resolv.conf (the agent's `--resolv-conf`), None is empty; in every
  case `dnsConfig` is then merged in: nameservers and searches appended without duplicates,
  options overriding same-named ones;
- a pod in its own network namespace never gets a loopback nameserver (such as
  systemd-resolved's 127.0.0.53): it would be the pod's own loopback, where nothing answers;
- the result is always a DNSConfig, even empty: without one, containerd copies the host's
  /etc/resolv.conf, loopback nameservers included;
- /etc/hosts holds localhost, the pod's own IP with its hostname (and FQDN when it has a
  subdomain), then the hostAliases; hostNetwork pods keep the host's file.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from skiff import defaults
from skiffpb.api.v1 import types_pb2 as t
from skiffpb.cri.v1 import api_pb2 as cri

NDOTS = "ndots:5"
MAX_NAMESERVERS = 3  # what glibc reads
MAX_SEARCHES = 32


@dataclass(frozen=True)
class ResolvConf:
    nameservers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class DnsSettings:
    cluster_dns: tuple[str, ...] = ()  # empty: no cluster DNS (ClusterFirst falls back to Default)
    cluster_domain: str = defaults.CLUSTER_DOMAIN
    host: ResolvConf = ResolvConf()


def parse_resolv_conf(text: str) -> ResolvConf:
    """nameserver, search/domain and options lines of a resolv.conf (the last search/domain wins)."""
    nameservers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if not fields:
            continue
        key, values = fields[0], fields[1:]
        if key == "nameserver" and values:
            nameservers.append(values[0])
        elif key in ("search", "domain"):
            searches = [v.rstrip(".") for v in values if v != "."]
        elif key == "options":
            options.extend(values)
    return ResolvConf(tuple(nameservers), tuple(searches), tuple(options))


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def _dedup(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _merge_options(base: list[str], extra: list[str]) -> list[str]:
    out: dict[str, str] = {}
    for opt in [*base, *extra]:
        out[opt.split(":", 1)[0]] = opt
    return list(out.values())


def policy_of(pod: t.Pod, settings: DnsSettings) -> str:
    """The effective policy: "cluster", "host" or "none"."""
    policy = pod.spec.dns_policy or "ClusterFirst"
    if policy == "None":
        return "none"
    if policy == "ClusterFirstWithHostNet" or (policy == "ClusterFirst" and not pod.spec.host_network):
        return "cluster" if settings.cluster_dns else "host"
    return "host"


def pod_dns_config(pod: t.Pod, settings: DnsSettings) -> cri.DNSConfig:
    kind = policy_of(pod, settings)
    ns = pod.metadata.namespace or "default"
    domain = settings.cluster_domain.rstrip(".")
    servers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    if kind == "cluster":
        servers = list(settings.cluster_dns)
        searches = [f"{ns}.svc.{domain}", f"svc.{domain}", domain, *settings.host.searches]
        options = [NDOTS]
    elif kind == "host":
        servers = list(settings.host.nameservers)
        searches = list(settings.host.searches)
        options = list(settings.host.options)
    extra = pod.spec.dns_config
    servers = _dedup([*servers, *extra.nameservers])
    searches = _dedup([*searches, *extra.searches])
    options = _merge_options(options, [o.name + (f":{o.value}" if o.HasField("value") else "") for o in extra.options])
    if not pod.spec.host_network:
        servers = [s for s in servers if not _is_loopback(s)]
    return cri.DNSConfig(servers=servers[:MAX_NAMESERVERS], searches=searches[:MAX_SEARCHES], options=options)


def pod_hostname(pod: t.Pod) -> str:
    return (pod.spec.hostname or pod.metadata.name)[:63]


def pod_fqdn(pod: t.Pod, settings: DnsSettings) -> str:
    """`<hostname>.<subdomain>.<ns>.svc.<domain>` when the pod has a subdomain, else ""."""
    if not pod.spec.subdomain:
        return ""
    ns = pod.metadata.namespace or "default"
    return f"{pod_hostname(pod)}.{pod.spec.subdomain}.{ns}.svc.{settings.cluster_domain.rstrip('.')}"


def hosts_file(pod: t.Pod, pod_ip: str, settings: DnsSettings) -> str:
    """The pod's managed /etc/hosts."""
    lines = [
        "# Kubernetes-managed hosts file (Skiff node agent).",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "fe00::0\tip6-mcastprefix",
        "fe00::1\tip6-allnodes",
        "fe00::2\tip6-allrouters",
    ]
    if pod_ip:
        fqdn = pod_fqdn(pod, settings)
        lines.append(f"{pod_ip}\t{fqdn}\t{pod_hostname(pod)}" if fqdn else f"{pod_ip}\t{pod_hostname(pod)}")
    if pod.spec.host_aliases:
        lines += ["", "# Entries added by HostAliases."]
        lines += [f"{a.ip}\t" + "\t".join(a.hostnames) for a in pod.spec.host_aliases]
    return "\n".join(lines) + "\n"

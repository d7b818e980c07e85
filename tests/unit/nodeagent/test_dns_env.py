"""A pod's DNSConfig, /etc/hosts and Service environment variables (pure, as the kubelet computes them)."""

from __future__ import annotations

import pytest

from nodeagent.dns import DnsSettings, ResolvConf, hosts_file, parse_resolv_conf, pod_dns_config
from nodeagent.envs import container_env
from nodeagent.envvars import service_env
from nodeagent.podconfig import PodConfigSettings, container_config, sandbox_config
from skiffpb.api.v1 import types_pb2 as t

HOST = ResolvConf(nameservers=("127.0.0.53", "10.0.0.2"), searches=("corp.example",), options=("edns0",))
SETTINGS = DnsSettings(cluster_dns=("169.254.20.10",), cluster_domain="cluster.local", host=HOST)
CLUSTER_SEARCH = ["prod.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.example"]


def pod(*, policy: str = "", host_network: bool = False, extra: t.PodDNSConfig | None = None) -> t.Pod:
    p = t.Pod(metadata=t.ObjectMeta(name="p", namespace="prod", uid="u1"))
    p.spec.containers.add(name="c", image="x")
    p.spec.dns_policy, p.spec.host_network = policy, host_network
    if extra is not None:
        p.spec.dns_config.CopyFrom(extra)
    return p


OPT = t.PodDNSConfig(nameservers=["1.1.1.1"], searches=["extra.example"],
                     options=[t.PodDNSConfigOption(name="ndots", value="2"), t.PodDNSConfigOption(name="rotate")])


@pytest.mark.parametrize(("p", "settings", "servers", "searches", "options"), [
    (pod(), SETTINGS, ["169.254.20.10"], CLUSTER_SEARCH, ["ndots:5"]),
    (pod(policy="ClusterFirst"), SETTINGS, ["169.254.20.10"], CLUSTER_SEARCH, ["ndots:5"]),
    # hostNetwork + ClusterFirst is Default (loopback kept: the pod shares the host's netns).
    (pod(host_network=True), SETTINGS, ["127.0.0.53", "10.0.0.2"], ["corp.example"], ["edns0"]),
    (pod(policy="ClusterFirstWithHostNet", host_network=True), SETTINGS, ["169.254.20.10"], CLUSTER_SEARCH,
     ["ndots:5"]),
    # Default in the pod's own netns: the loopback resolver is dropped.
    (pod(policy="Default"), SETTINGS, ["10.0.0.2"], ["corp.example"], ["edns0"]),
    (pod(policy="None", extra=OPT), SETTINGS, ["1.1.1.1"], ["extra.example"], ["ndots:2", "rotate"]),
    (pod(extra=OPT), SETTINGS, ["169.254.20.10", "1.1.1.1"], [*CLUSTER_SEARCH, "extra.example"],
     ["ndots:2", "rotate"]),
    # No cluster DNS configured: ClusterFirst falls back to Default.
    (pod(), DnsSettings(host=HOST), ["10.0.0.2"], ["corp.example"], ["edns0"]),
    (pod(policy="None"), SETTINGS, [], [], []),
], ids=["default-policy", "cluster-first", "hostnet-cluster-first", "hostnet-with-hostnet", "default",
        "none-with-config", "cluster-first-plus-config", "no-cluster-dns", "none-empty"])
def test_pod_dns_config(p: t.Pod, settings: DnsSettings, servers: list[str], searches: list[str],
                        options: list[str]) -> None:
    got = pod_dns_config(p, settings)
    assert (list(got.servers), list(got.searches), list(got.options)) == (servers, searches, options)


def test_sandbox_always_carries_a_dns_config() -> None:
    # Without one containerd copies the host's resolv.conf, loopback resolver and all.
    cfg = sandbox_config(pod(policy="None"), 0, PodConfigSettings(pod_log_dir="/logs", dns=SETTINGS))
    assert cfg.HasField("dns_config")
    cfg = sandbox_config(pod(), 0, PodConfigSettings(pod_log_dir="/logs", dns=SETTINGS))
    assert list(cfg.dns_config.servers) == ["169.254.20.10"]


@pytest.mark.parametrize(("text", "want"), [
    ("nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch a.example b.example\n",
     ResolvConf(("127.0.0.53",), ("a.example", "b.example"), ("edns0", "trust-ad"))),
    ("# comment\ndomain corp.example\nnameserver 10.0.0.2 # trailing\nnameserver 10.0.0.3\n",
     ResolvConf(("10.0.0.2", "10.0.0.3"), ("corp.example",), ())),
    ("", ResolvConf()),
], ids=["systemd-resolved", "domain-and-comments", "empty"])
def test_parse_resolv_conf(text: str, want: ResolvConf) -> None:
    assert parse_resolv_conf(text) == want


def test_hosts_file_has_fqdn_and_aliases() -> None:
    p = pod()
    p.spec.hostname, p.spec.subdomain = "db-0", "db"
    p.spec.host_aliases.add(ip="10.1.2.3", hostnames=["foo.local", "bar.local"])
    text = hosts_file(p, "10.244.1.5", SETTINGS)
    assert "10.244.1.5\tdb-0.db.prod.svc.cluster.local\tdb-0\n" in text
    assert text.endswith("# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n")
    assert "127.0.0.1\tlocalhost\n" in text


def svc(name: str, ns: str = "prod", *, ip: str = "10.96.0.20", ports: tuple[tuple[str, int, str], ...] = (),
        type_: str = "ClusterIP") -> t.Service:
    s = t.Service(metadata=t.ObjectMeta(name=name, namespace=ns))
    s.spec.cluster_ip, s.spec.type = ip, type_
    for n, port, proto in ports:
        s.spec.ports.add(name=n, port=port, protocol=proto)
    return s


SERVICES = [
    svc("web-service", ports=(("http", 80, "TCP"), ("metrics", 9090, "TCP"))),
    svc("kubernetes", "default", ip="10.96.0.1", ports=(("https", 443, "TCP"),)),
    svc("headless", ip="None", ports=(("", 80, "TCP"),)),
    svc("ext", ip="", type_="ExternalName"),
    svc("other-ns", "elsewhere", ip="10.96.0.30", ports=(("", 53, "UDP"),)),
]
WEB = [
    ("WEB_SERVICE_SERVICE_HOST", "10.96.0.20"), ("WEB_SERVICE_SERVICE_PORT", "80"),
    ("WEB_SERVICE_SERVICE_PORT_HTTP", "80"), ("WEB_SERVICE_SERVICE_PORT_METRICS", "9090"),
    ("WEB_SERVICE_PORT", "tcp://10.96.0.20:80"),
    ("WEB_SERVICE_PORT_80_TCP", "tcp://10.96.0.20:80"), ("WEB_SERVICE_PORT_80_TCP_PROTO", "tcp"),
    ("WEB_SERVICE_PORT_80_TCP_PORT", "80"), ("WEB_SERVICE_PORT_80_TCP_ADDR", "10.96.0.20"),
    ("WEB_SERVICE_PORT_9090_TCP", "tcp://10.96.0.20:9090"), ("WEB_SERVICE_PORT_9090_TCP_PROTO", "tcp"),
    ("WEB_SERVICE_PORT_9090_TCP_PORT", "9090"), ("WEB_SERVICE_PORT_9090_TCP_ADDR", "10.96.0.20"),
]
KUBERNETES = [
    ("KUBERNETES_SERVICE_HOST", "10.96.0.1"), ("KUBERNETES_SERVICE_PORT", "443"),
    ("KUBERNETES_SERVICE_PORT_HTTPS", "443"), ("KUBERNETES_PORT", "tcp://10.96.0.1:443"),
    ("KUBERNETES_PORT_443_TCP", "tcp://10.96.0.1:443"), ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
    ("KUBERNETES_PORT_443_TCP_PORT", "443"), ("KUBERNETES_PORT_443_TCP_ADDR", "10.96.0.1"),
]


@pytest.mark.parametrize(("links", "want"), [
    (None, KUBERNETES + WEB),
    (True, KUBERNETES + WEB),
    (False, KUBERNETES),  # the master Service is always there
], ids=["default", "enabled", "disabled"])
def test_service_env(links: bool | None, want: list[tuple[str, str]]) -> None:
    p = pod()
    if links is not None:
        p.spec.enable_service_links = links
    assert service_env(p, SERVICES) == want


class NoConfig:
    """No ConfigMaps or Secrets: these tests are about the Service variables."""

    def config_map(self, namespace: str, name: str) -> t.ConfigMap | None:
        return None

    def secret(self, namespace: str, name: str) -> t.Secret | None:
        return None


def test_container_env_wins_over_service_env_and_may_refer_to_it() -> None:
    p = pod()
    p.spec.containers[0].env.add(name="WEB_SERVICE_SERVICE_HOST", value="mine")
    p.spec.containers[0].env.add(name="OWN", value="1")
    p.spec.containers[0].env.add(name="URL", value="http://$(WEB_SERVICE_SERVICE_PORT)")
    services = service_env(p, SERVICES[:1])
    env = container_env(p, p.spec.containers[0], NoConfig(), service_env=services)
    cfg = container_config(p, p.spec.containers[0], 0, env=env)
    got = [(kv.key, kv.value) for kv in cfg.envs]
    assert [k for k, _ in got].count("WEB_SERVICE_SERVICE_HOST") == 1
    values = dict(got)
    assert values["WEB_SERVICE_SERVICE_HOST"] == "mine" and values["OWN"] == "1"
    assert values["URL"] == "http://" + dict(services)["WEB_SERVICE_SERVICE_PORT"]


@pytest.mark.parametrize(("host_network", "mounts"), [(False, [("/etc/hosts", "/d/u1/etc-hosts")]), (True, [])],
                         ids=["own-netns", "host-network"])
def test_managed_hosts_is_mounted(host_network: bool, mounts: list[tuple[str, str]]) -> None:
    p = pod(host_network=host_network)
    cfg = container_config(p, p.spec.containers[0], 0, etc_hosts="/d/u1/etc-hosts")
    assert [(m.container_path, m.host_path) for m in cfg.mounts] == mounts

"""Host configuration rendering: the daemons each host runs, and their systemd units."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy import render


def cluster(hosts: list[tuple[str, str]]) -> render.ClusterConfig:
    return render.ClusterConfig(members=render.plan_members(hosts), python="/opt/skiff/.venv/bin/python")


@pytest.mark.parametrize(
    ("hosts", "expected"),
    [
        ([("cp", "10.0.0.10")], [("s1", "cp", 2379, 2380, 6443), ("s2", "cp", 2479, 2480, 6444),
                                 ("s3", "cp", 2579, 2580, 6445)]),
        ([("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")],
         [("s1", "a", 2379, 2380, 6443), ("s2", "b", 2379, 2380, 6443), ("s3", "c", 2379, 2380, 6443)]),
    ],
    ids=["one-host", "three-hosts"],
)
def test_members_spread_over_hosts(hosts: list[tuple[str, str]], expected: list[tuple[object, ...]]) -> None:
    got = [(m.name, m.host, m.client_port, m.peer_port, m.api_port) for m in render.plan_members(hosts)]
    assert got == expected


def test_control_plane_host_daemons() -> None:
    c = cluster([("cp", "10.0.0.10")])
    host = render.HostConfig("cp", "10.0.0.10", (render.CONTROL_PLANE,), Path("/var/lib/skiff"),
                             store_password_file=Path("/etc/skiff/store-password"))
    specs = render.daemons_for(c, host)
    assert [s.name for s in specs] == ["store-s1", "store-s2", "store-s3", "apiserver-s1", "apiserver-s2",
                                       "apiserver-s3", "controllers", "scheduler"]
    s2 = specs[1].argv
    assert s2[s2.index("--initial-cluster") + 1] == "s1=10.0.0.10:2380,s2=10.0.0.10:2480,s3=10.0.0.10:2580"
    assert s2[s2.index("--password-file") + 1] == "/etc/skiff/store-password"
    api2 = specs[4].argv
    assert api2[api2.index("--store-endpoints") + 1].split(",")[0] == "10.0.0.10:2479"  # its own member first
    assert specs[4].after == ("store-s2",)
    assert api2[api2.index("--default-unreachable-toleration-seconds") + 1] == "300"
    assert api2[api2.index("--default-not-ready-toleration-seconds") + 1] == "300"
    assert "--pod-eviction-timeout" not in specs[6].argv
    cm = specs[6].argv
    # default/kubernetes leads to each api-server's HTTPS port, in the order of --api-servers.
    assert cm[cm.index("--api-servers") + 1] == "10.0.0.10:6443,10.0.0.10:6444,10.0.0.10:6445"
    assert cm[cm.index("--kubernetes-service-endpoints") + 1] == "10.0.0.10:8443,10.0.0.10:8444,10.0.0.10:8445"
    assert cm[cm.index("--root-ca-file") + 1] == "/var/lib/skiff/pki/ca.crt"


def test_worker_daemons_share_node_paths() -> None:
    c = cluster([("cp", "10.0.0.10")])
    host = render.HostConfig("n1", "10.0.0.11", (render.WORKER,), Path("/var/lib/skiff"))
    specs = {s.name: s for s in render.daemons_for(c, host, netns_path="/run/netns/L-n1")}
    assert list(specs) == ["containerd", "nodeagent", "netproxy", "clusterdns"]
    agent = specs["nodeagent"].argv
    assert agent[agent.index("--container-runtime-endpoint") + 1] == "unix:///var/lib/skiff/node/containerd.sock"
    assert agent[agent.index("--api-servers") + 1] == "10.0.0.10:6443,10.0.0.10:6444,10.0.0.10:6445"
    assert agent[agent.index("--netns") + 1] == "/run/netns/L-n1"
    assert agent[agent.index("--lease-period") + 1] == "10s"
    # TLS from the host's PKI directory: the node's certificate serves and authenticates the agent;
    # proxy and DNS present their own identities.
    assert agent[agent.index("--tls-cert-file") + 1] == agent[agent.index("--client-certificate") + 1] == \
        "/var/lib/skiff/pki/nodes/n1.crt"
    assert agent[agent.index("--client-ca-file") + 1] == "/var/lib/skiff/pki/ca.crt"
    assert specs["netproxy"].argv[specs["netproxy"].argv.index("--client-certificate") + 1] == \
        "/var/lib/skiff/pki/netproxy.crt"
    assert all("--insecure" not in s.argv for s in specs.values())
    assert "restrict_oom_score_adj = true" in render.containerd_config(host)
    # Pods are told the address the same host's clusterdns listens on.
    dns = specs["clusterdns"].argv
    assert agent[agent.index("--cluster-dns") + 1] + ":53" == dns[dns.index("--listen") + 1] == "169.254.20.10:53"
    assert dns[dns.index("--reverse-cidrs") + 1] == "10.96.0.0/12,10.244.0.0/16"
    assert "--upstreams" not in dns


@pytest.mark.parametrize(("roles", "insecure"), [
    ((render.CONTROL_PLANE, render.WORKER), False), ((render.CONTROL_PLANE,), False),
    ((render.CONTROL_PLANE, render.WORKER), True)], ids=["both-tls", "control-plane-tls", "insecure"])
def test_every_daemon_is_tls_unless_insecure(roles: tuple[str, ...], insecure: bool) -> None:
    c = cluster([("cp", "10.0.0.10")])
    host = render.HostConfig("cp", "10.0.0.10", roles, Path("/s"), insecure=insecure)
    for spec in render.daemons_for(c, host):
        if spec.name == "containerd":
            continue
        assert ("--insecure" in spec.argv) == insecure, spec.name
        tls_flag = ("--cert-file" if spec.name.startswith("store-") else "--tls-cert-file"
                    if spec.name.startswith("apiserver-") or spec.name == "nodeagent" else "--client-certificate")
        assert (tls_flag in spec.argv) != insecure, spec.name
        if spec.name.startswith("apiserver-") and not insecure:  # service-account tokens: the PKI's key pair
            argv = list(spec.argv)
            assert argv[argv.index("--service-account-signing-key-file") + 1].endswith("/pki/sa.key")
            assert argv[argv.index("--service-account-key-file") + 1].endswith("/pki/sa.pub")


def test_pki_specs_cover_every_address_clients_dial() -> None:
    c = cluster([("cp", "10.0.0.10"), ("cp2", "10.0.0.20")])
    specs = {s.name: s for s in render.pki_specs_for(c, [("cp", "10.0.0.10", (render.CONTROL_PLANE, render.WORKER)),
                                                          ("n1", "10.0.0.11", (render.WORKER,))])}
    assert {"10.0.0.10", "10.0.0.20", "10.96.0.1", "127.0.0.1"} <= set(specs["apiserver"].ips)
    # What an in-cluster client dials: https://kubernetes.default.svc (and shorter names).
    assert {"kubernetes", "kubernetes.default", "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local"} <= set(specs["apiserver"].dns_names)
    assert {m.name for m in c.members} == {n.split("/")[1] for n in specs if n.startswith("store/")}
    assert specs["nodes/n1"].ips == ("10.0.0.11",) and specs["nodes/cp"].dns_names == ("cp",)


def test_systemd_unit() -> None:
    spec = render.DaemonSpec("apiserver-s1", ("/usr/bin/python3", "-m", "controlplane.apiserver", "--listen",
                                              "10.0.0.10:6443"), "Skiff api-server", after=("store-s1",))
    unit = render.systemd_unit(spec)
    assert "ExecStart=/usr/bin/python3 -m controlplane.apiserver --listen 10.0.0.10:6443" in unit
    assert "After=network-online.target skiff-store-s1.service" in unit
    assert unit.rstrip().endswith("WantedBy=multi-user.target")


def test_cluster_file_round_trip() -> None:
    c = render.ClusterConfig(members=render.plan_members([("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")]),
                             proxy_mode="ipvs", python="/py")
    data = render.cluster_to_dict(c)
    assert "python" not in data  # each host runs its own
    assert data["proxyMode"] == "ipvs"
    assert render.cluster_from_dict(data, python="/py") == c


@pytest.mark.parametrize("hosts", [[("cp", "10.0.0.10")], [("a", "10.0.0.1"), ("b", "10.0.0.2")]],
                         ids=["three-members-one-host", "two-hosts"])
def test_members_on_one_host_keep_distinct_ports_through_the_cluster_file(hosts: list[tuple[str, str]]) -> None:
    """The install writes cluster.json and renders from what it reads back: every listen address
    of an api-server (gRPC and REST) must survive that, or api-servers sharing a host clash."""
    c = render.cluster_from_dict(render.cluster_to_dict(render.ClusterConfig(members=render.plan_members(hosts))))
    listens = []
    for name, ip in hosts:
        host = render.HostConfig(name, ip, (render.CONTROL_PLANE,), Path("/var/lib/skiff"))
        for spec in render.control_plane_daemons(c, host):
            if spec.name.startswith("apiserver-"):
                listens += [spec.argv[spec.argv.index(flag) + 1] for flag in ("--listen", "--http-listen")]
    assert len(listens) == 6
    assert len(set(listens)) == len(listens), listens


@pytest.mark.parametrize(("api_port", "http_port"), [(6443, 8443), (6445, 8445)], ids=["first-slot", "third-slot"])
def test_cluster_file_from_before_the_rest_api_shifts_its_port_like_the_grpc_one(api_port: int,
                                                                                 http_port: int) -> None:
    c = render.cluster_from_dict({"members": [{**_members()[0], "apiPort": api_port}]})
    assert c.members[0].http_port == http_port


def test_cluster_file_from_before_taint_based_eviction_still_loads() -> None:
    c = render.cluster_from_dict({"members": _members(), "podEvictionTimeout": "60s"}, python="/py")
    assert c.default_toleration_seconds == 300


def _members() -> list[dict[str, object]]:
    return [{"name": "s1", "host": "cp", "ip": "10.0.0.1", "clientPort": 2379, "peerPort": 2380, "apiPort": 6443}]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "cluster: expected an object"),
        ({"members": _members(), "colour": "red"}, "unknown field.*colour"),
        ({}, "cluster.members: missing"),
        ({"members": []}, "at least one store member"),
        ({"members": [{**_members()[0], "ip": "cp.local"}]}, r"cluster.members\[0\].ip"),
        ({"members": [{**_members()[0], "clientPort": "2379"}]}, r"members\[0\].clientPort: expected an integer"),
        ({"members": [{**_members()[0], "apiPort": True}]}, r"members\[0\].apiPort: expected an integer"),
        ({"members": [{**_members()[0], "httpPort": "8443"}]}, r"members\[0\].httpPort: expected an integer"),
        ({"members": _members() * 2}, "duplicate member names"),
        ({"members": _members(), "proxyMode": "userspace"}, "cluster.proxyMode"),
        ({"members": _members(), "serviceCidr": "10.96.0.1/12"}, "cluster.serviceCidr"),
        ({"members": _members(), "nodeCidrMaskSize": "24"}, "cluster.nodeCidrMaskSize: expected an integer"),
        ({"members": _members(), "serviceCidr": "10.244.0.0/20"},
         r"cluster.serviceCidr 10.244.0.0/20 overlaps cluster.clusterCidr 10.244.0.0/16"),
        ({"members": [{**_members()[0], "ip": "10.100.0.5"}]},
         r"cluster.serviceCidr 10.96.0.0/12 overlaps the address of cp 10.100.0.5/32"),
        ({"members": _members(), "nodeLeasePeriod": "soon"}, "cluster.nodeLeasePeriod: 'soon' is not a duration"),
    ],
    ids=["not-object", "unknown-field", "no-members", "empty-members", "bad-ip", "port-string", "port-bool",
         "http-port-string", "duplicate", "proxy-mode", "host-bits-set", "mask-string", "service-overlaps-pods",
         "host-in-services", "lease-period"],
)
def test_cluster_file_errors_name_the_field(data: object, message: str) -> None:
    with pytest.raises(render.ConfigError, match=message):
        render.cluster_from_dict(data)


@pytest.mark.parametrize("password_file", ["/etc/skiff/store-password", ""], ids=["password-file", "insecure"])
def test_all_in_one_control_plane_runs_the_same_command_lines(password_file: str) -> None:
    """`python -m controlplane` and render describe one control-plane host alike, flag for flag."""
    from controlplane.__main__ import build_parser, plan_children

    members = (render.StoreMember("s1", "cp", "10.0.0.10"),)
    c = render.ClusterConfig(members=members, python="py")
    host = render.HostConfig("cp", "10.0.0.10", (render.CONTROL_PLANE,), Path("/var/lib/skiff"),
                             store_password_file=Path(password_file) if password_file else None)
    rendered = {s.name: list(s.argv) for s in render.daemons_for(c, host)}
    password = ["--password-file", password_file] if password_file else ["--insecure-no-password"]
    args = build_parser().parse_args([
        "--name", "s1", "--data-dir", "/var/lib/skiff/store/s1", "--listen-client", "10.0.0.10:2379",
        "--listen-peer", "10.0.0.10:2380", "--listen", "10.0.0.10:6443", "--node-name", "cp",
        "--audit-log-path", "/var/lib/skiff/apiserver/audit-s1.log", "--pki-dir", "/var/lib/skiff/pki", *password])
    planned = {child.name: child.argv for child in plan_children(args, python="py")}
    assert planned == {"store": rendered["store-s1"], "apiserver": rendered["apiserver-s1"],
                       "controllers": rendered["controllers"], "scheduler": rendered["scheduler"]}

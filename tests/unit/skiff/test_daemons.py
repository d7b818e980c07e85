"""skiff.daemons: each command line parses with its daemon's own parser and means what was asked.

The definitions live in skiff/ and the parsers in the components, so nothing but this test ties
them together: a flag renamed in a daemon, or misspelt here, fails below.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from clusterdns.__main__ import build_parser as clusterdns_parser
from controlplane.apiserver.__main__ import build_parser as apiserver_parser
from controlplane.controllers.__main__ import build_parser as controllers_parser
from controlplane.scheduler.__main__ import build_parser as scheduler_parser
from controlplane.store.__main__ import build_parser as store_parser
from netproxy.__main__ import build_parser as netproxy_parser
from nodeagent.__main__ import build_parser as nodeagent_parser
from skiff import daemons


@dataclass(frozen=True)
class Case:
    id: str
    argv: list[str]
    module: str
    parser: Callable[[], argparse.ArgumentParser]
    expected: dict[str, object]  # parsed attribute -> value


CASES = [
    Case("store-password-file", daemons.store(
        "py", name="s2", data_dir="/d/s2", listen_client="10.0.0.2:2379", listen_peer="10.0.0.2:2380",
        initial_cluster="s1=10.0.0.1:2380,s2=10.0.0.2:2380", initial_cluster_token="tok", password_file="/pw",
        verbose=True), daemons.STORE, store_parser,
        {"name": "s2", "data_dir": "/d/s2", "listen_client": "10.0.0.2:2379", "listen_peer": "10.0.0.2:2380",
         "initial_cluster": "s1=10.0.0.1:2380,s2=10.0.0.2:2380", "initial_cluster_token": "tok",
         "initial_cluster_state": "new", "password_file": "/pw", "insecure_no_password": False, "verbose": True}),
    Case("store-insecure-joining", daemons.store(
        "py", name="s4", data_dir="/d", listen_client="127.0.0.1:2379", listen_peer="127.0.0.1:2380",
        initial_cluster="s4=127.0.0.1:2380", initial_cluster_token="t", initial_cluster_state="existing",
        insecure_no_password=True), daemons.STORE, store_parser,
        {"initial_cluster_state": "existing", "password_file": None, "insecure_no_password": True, "verbose": False}),
    Case("store-password-from-environment", daemons.store(
        "py", name="s1", data_dir="/d", listen_client="127.0.0.1:2379", listen_peer="127.0.0.1:2380",
        initial_cluster="s1=127.0.0.1:2380", initial_cluster_token="t"), daemons.STORE, store_parser,
        {"password_file": None, "insecure_no_password": False}),
    Case("apiserver", daemons.apiserver(
        "py", store_endpoints="10.0.0.2:2379,10.0.0.1:2379", listen="10.0.0.2:6443", service_cidr="10.96.0.0/12",
        node_port_range="30000-32767", node_name="cp2", default_not_ready_toleration_seconds=30,
        default_unreachable_toleration_seconds=4, verbose=True), daemons.APISERVER, apiserver_parser,
        {"store_endpoints": "10.0.0.2:2379,10.0.0.1:2379", "listen": "10.0.0.2:6443", "service_cidr": "10.96.0.0/12",
         "node_port_range": "30000-32767", "node_name": "cp2", "default_not_ready_toleration_seconds": 30,
         "default_unreachable_toleration_seconds": 4, "verbose": True}),
    Case("controllers", daemons.controllers(
        "py", api_servers="a:6443,b:6443", cluster_cidr="10.244.0.0/16", node_cidr_mask_size=25,
        node_monitor_grace_period="1m30s", identity="cp"),
        daemons.CONTROLLERS, controllers_parser,
        {"api_servers": "a:6443,b:6443", "cluster_cidr": "10.244.0.0/16", "node_cidr_mask_size": 25,
         "node_monitor_grace_period": 90.0, "identity": "cp", "verbose": False}),
    Case("controllers-kubernetes-service", daemons.controllers(
        "py", api_servers="a:6443", cluster_cidr="10.244.0.0/16", node_cidr_mask_size=24,
        node_monitor_grace_period="40s", identity="cp", service_cidr="10.96.0.0/12"),
        daemons.CONTROLLERS, controllers_parser, {"service_cidr": "10.96.0.0/12"}),
    Case("scheduler", daemons.scheduler("py", api_servers="a:6443", identity="cp", verbose=True),
         daemons.SCHEDULER, scheduler_parser, {"api_servers": "a:6443", "identity": "cp", "verbose": True}),
    Case("nodeagent", daemons.nodeagent(
        "py", node_name="n1", api_servers="a:6443", container_runtime_endpoint="unix:///run/c.sock",
        node_ip="10.0.0.11", listen="10.0.0.11:10250", state_dir="/s/agent", cni_conf_dir="/s/cni",
        ipam_dir="/s/ipam", pod_log_dir="/s/pods", cgroup_parent="/skiff-n1", lease_period="2s",
        node_labels={"zone": "b", "disk": "ssd"},
        register_with_taints=("a=b:NoSchedule", "c:NoExecute"), netns="/run/netns/n1"),
        daemons.NODEAGENT, nodeagent_parser,
        {"node_name": "n1", "api_servers": "a:6443", "container_runtime_endpoint": "unix:///run/c.sock",
         "node_ip": "10.0.0.11", "listen": "10.0.0.11:10250", "state_dir": "/s/agent", "cni_conf_dir": "/s/cni",
         "ipam_dir": "/s/ipam", "pod_log_dir": "/s/pods", "cgroup_parent": "/skiff-n1", "lease_period": 2.0,
         "node_labels": "disk=ssd,zone=b", "register_with_taints": "a=b:NoSchedule,c:NoExecute",
         "netns": "/run/netns/n1", "verbose": False}),
    Case("nodeagent-plain", daemons.nodeagent(
        "py", node_name="n1", api_servers="a:6443", container_runtime_endpoint="unix:///run/c.sock", node_ip="",
        listen="0.0.0.0:10250", state_dir="/s", cni_conf_dir="/s/cni", ipam_dir="/s/ipam", pod_log_dir="/s/pods",
        cgroup_parent=""), daemons.NODEAGENT, nodeagent_parser,
        {"node_labels": "", "register_with_taints": "", "netns": "", "lease_period": 10.0, "cluster_dns": "",
         "cluster_domain": "cluster.local"}),
    Case("nodeagent-cluster-dns", daemons.nodeagent(
        "py", node_name="n1", api_servers="a:6443", container_runtime_endpoint="unix:///run/c.sock", node_ip="",
        listen="0.0.0.0:10250", state_dir="/s", cni_conf_dir="/s/cni", ipam_dir="/s/ipam", pod_log_dir="/s/pods",
        cgroup_parent="", cluster_dns="169.254.20.10", cluster_domain="corp.local"), daemons.NODEAGENT,
        nodeagent_parser, {"cluster_dns": "169.254.20.10", "cluster_domain": "corp.local"}),
    Case("clusterdns", daemons.clusterdns(
        "py", api_servers="a:6443", listen="169.254.20.10:53", cluster_domain="cluster.local",
        reverse_cidrs=("10.96.0.0/12", "10.244.0.0/16"), upstreams="10.0.0.2", verbose=True),
        daemons.CLUSTERDNS, clusterdns_parser,
        {"api_servers": "a:6443", "listen": "169.254.20.10:53", "cluster_domain": "cluster.local",
         "reverse_cidrs": "10.96.0.0/12,10.244.0.0/16", "upstreams": "10.0.0.2", "verbose": True}),
    Case("netproxy", daemons.netproxy(
        "py", api_servers="a:6443", node_name="n1", mode="ipvs", cluster_cidr="10.244.0.0/16",
        min_sync_period="0", iptables_backend="nft", verbose=True), daemons.NETPROXY, netproxy_parser,
        {"api_servers": "a:6443", "node_name": "n1", "mode": "ipvs", "cluster_cidr": "10.244.0.0/16",
         "min_sync_period": 0.0, "iptables_backend": "nft", "verbose": True}),
    # Every daemon's metrics address: the default (loopback and the daemon's port), set, or off.
    Case("store-metrics-default", daemons.store(
        "py", name="s1", data_dir="/d", listen_client="127.0.0.1:2379", listen_peer="127.0.0.1:2380",
        initial_cluster="s1=127.0.0.1:2380", initial_cluster_token="t"), daemons.STORE, store_parser,
        {"metrics_bind_address": "127.0.0.1:2381"}),
    Case("store-metrics-shifted", daemons.store(
        "py", name="s2", data_dir="/d", listen_client="127.0.0.1:2479", listen_peer="127.0.0.1:2480",
        initial_cluster="s2=127.0.0.1:2480", initial_cluster_token="t", metrics_bind_address="127.0.0.1:2481"),
        daemons.STORE, store_parser, {"metrics_bind_address": "127.0.0.1:2481"}),
    Case("apiserver-metrics-default", daemons.apiserver(
        "py", store_endpoints="a:2379", listen="a:6443", service_cidr="10.96.0.0/12",
        node_port_range="30000-32767", node_name="cp"), daemons.APISERVER, apiserver_parser,
        {"metrics_bind_address": "127.0.0.1:8080"}),
    Case("controllers-metrics-off", daemons.controllers(
        "py", api_servers="a:6443", cluster_cidr="10.244.0.0/16", node_cidr_mask_size=24,
        node_monitor_grace_period="40s", identity="cp", metrics_bind_address="off"),
        daemons.CONTROLLERS, controllers_parser, {"metrics_bind_address": ""}),
    Case("scheduler-metrics-default", daemons.scheduler("py", api_servers="a:6443", identity="cp"),
         daemons.SCHEDULER, scheduler_parser, {"metrics_bind_address": "127.0.0.1:10259"}),
    Case("nodeagent-metrics-set", daemons.nodeagent(
        "py", node_name="n1", api_servers="a:6443", container_runtime_endpoint="unix:///run/c.sock", node_ip="",
        listen="0.0.0.0:10250", state_dir="/s", cni_conf_dir="/s/cni", ipam_dir="/s/ipam", pod_log_dir="/s/pods",
        cgroup_parent="", metrics_bind_address="0.0.0.0:10255"), daemons.NODEAGENT, nodeagent_parser,
        {"metrics_bind_address": "0.0.0.0:10255"}),
    Case("netproxy-metrics-default", daemons.netproxy(
        "py", api_servers="a:6443", node_name="n1", mode="iptables", cluster_cidr="10.244.0.0/16",
        min_sync_period="1s", iptables_backend="auto"), daemons.NETPROXY, netproxy_parser,
        {"metrics_bind_address": "127.0.0.1:10249"}),
    Case("clusterdns-metrics-default", daemons.clusterdns(
        "py", api_servers="a:6443", listen="169.254.20.10:53", cluster_domain="cluster.local",
        reverse_cidrs=("10.96.0.0/12",)), daemons.CLUSTERDNS, clusterdns_parser,
        {"metrics_bind_address": "127.0.0.1:9153"}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_command_line_parses_as_meant(case: Case) -> None:
    assert case.argv[:3] == ["py", "-m", case.module]
    args = case.parser().parse_args(case.argv[3:])
    assert {key: getattr(args, key) for key in case.expected} == case.expected


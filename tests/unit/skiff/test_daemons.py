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
from skiff.tls import ApiServerTLS, Credentials, ServerTLS, ServiceAccountKeys

SERVING = ServerTLS("/pki/srv.crt", "/pki/srv.key", "/pki/ca.crt", require_client_cert=True)
CLIENT = Credentials("/pki/ca.crt", "/pki/c.crt", "/pki/c.key")
CLIENT_FLAGS = {"certificate_authority": "/pki/ca.crt", "client_certificate": "/pki/c.crt", "client_key": "/pki/c.key",
                "insecure": False}


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
        tls=SERVING, verbose=True), daemons.STORE, store_parser,
        {"name": "s2", "data_dir": "/d/s2", "listen_client": "10.0.0.2:2379", "listen_peer": "10.0.0.2:2380",
         "initial_cluster": "s1=10.0.0.1:2380,s2=10.0.0.2:2380", "initial_cluster_token": "tok",
         "initial_cluster_state": "new", "password_file": "/pw", "insecure_no_password": False, "verbose": True,
         "cert_file": "/pki/srv.crt", "key_file": "/pki/srv.key", "trusted_ca_file": "/pki/ca.crt",
         "client_cert_auth": True, "insecure": False}),
    Case("store-insecure-joining", daemons.store(
        "py", name="s4", data_dir="/d", listen_client="127.0.0.1:2379", listen_peer="127.0.0.1:2380",
        initial_cluster="s4=127.0.0.1:2380", initial_cluster_token="t", initial_cluster_state="existing",
        insecure_no_password=True, tls=None), daemons.STORE, store_parser,
        {"initial_cluster_state": "existing", "password_file": None, "insecure_no_password": True, "verbose": False,
         "insecure": True, "cert_file": ""}),
    Case("store-password-from-environment", daemons.store(
        "py", name="s1", data_dir="/d", listen_client="127.0.0.1:2379", listen_peer="127.0.0.1:2380",
        initial_cluster="s1=127.0.0.1:2380", initial_cluster_token="t", tls=None), daemons.STORE, store_parser,
        {"password_file": None, "insecure_no_password": False}),
    Case("apiserver", daemons.apiserver(
        "py", store_endpoints="10.0.0.2:2379,10.0.0.1:2379", listen="10.0.0.2:6443", service_cidr="10.96.0.0/12",
        node_port_range="30000-32767", node_name="cp2", default_not_ready_toleration_seconds=30,
        default_unreachable_toleration_seconds=4, verbose=True,
        tls=ApiServerTLS(ServerTLS("/pki/api.crt", "/pki/api.key", "/pki/ca.crt"), CLIENT,
                         Credentials("/pki/ca.crt", "/pki/k.crt", "/pki/k.key"),
                         ServiceAccountKeys("/pki/sa.key", "/pki/sa.pub", "https://issuer"))),
        daemons.APISERVER, apiserver_parser,
        {"store_endpoints": "10.0.0.2:2379,10.0.0.1:2379", "listen": "10.0.0.2:6443", "service_cidr": "10.96.0.0/12",
         "node_port_range": "30000-32767", "node_name": "cp2", "default_not_ready_toleration_seconds": 30,
         "default_unreachable_toleration_seconds": 4, "verbose": True, "authorization_mode": "Node,RBAC",
         "audit_log_path": "",
         "tls_cert_file": "/pki/api.crt", "tls_private_key_file": "/pki/api.key", "client_ca_file": "/pki/ca.crt",
         "etcd_cafile": "/pki/ca.crt", "etcd_certfile": "/pki/c.crt", "etcd_keyfile": "/pki/c.key",
         "kubelet_certificate_authority": "/pki/ca.crt", "kubelet_client_certificate": "/pki/k.crt",
         "kubelet_client_key": "/pki/k.key", "insecure": False, "service_account_signing_key_file": "/pki/sa.key",
         "service_account_key_file": "/pki/sa.pub", "service_account_issuer": "https://issuer"}),
    Case("apiserver-insecure", daemons.apiserver(
        "py", store_endpoints="s:2379", listen="127.0.0.1:6443", service_cidr="10.96.0.0/12",
        node_port_range="30000-32767", node_name="cp", tls=None), daemons.APISERVER, apiserver_parser,
        {"insecure": True, "tls_cert_file": ""}),
    Case("apiserver-authorization", daemons.apiserver(
        "py", store_endpoints="s:2379", listen="a:6443", service_cidr="10.96.0.0/12", node_port_range="30000-32767",
        node_name="cp", tls=None, authorization_mode="AlwaysAllow", audit_log_path="/var/log/skiff/audit.log"),
        daemons.APISERVER, apiserver_parser,
        {"authorization_mode": "AlwaysAllow", "audit_log_path": "/var/log/skiff/audit.log"}),
    Case("controllers", daemons.controllers(
        "py", api_servers="a:6443,b:6443", cluster_cidr="10.244.0.0/16", node_cidr_mask_size=25,
        node_monitor_grace_period="1m30s", identity="cp", credentials=CLIENT,
        cluster_signing_cert_file="/pki/ca.crt", cluster_signing_key_file="/pki/ca.key"),
        daemons.CONTROLLERS, controllers_parser,
        {"api_servers": "a:6443,b:6443", "cluster_cidr": "10.244.0.0/16", "node_cidr_mask_size": 25,
         "node_monitor_grace_period": 90.0, "identity": "cp", "verbose": False, **CLIENT_FLAGS,
         "cluster_signing_cert_file": "/pki/ca.crt", "cluster_signing_key_file": "/pki/ca.key"}),
    Case("controllers-kubernetes-service", daemons.controllers(
        "py", api_servers="a:6443", cluster_cidr="10.244.0.0/16", node_cidr_mask_size=24,
        node_monitor_grace_period="40s", identity="cp", service_cidr="10.96.0.0/12", credentials=None),
        daemons.CONTROLLERS, controllers_parser, {"service_cidr": "10.96.0.0/12", "insecure": True,
                                                  "cluster_signing_cert_file": "", "root_ca_file": "",
                                                  "kubernetes_service_endpoints": ""}),
    Case("controllers-service-accounts", daemons.controllers(
        "py", api_servers="a:6443,b:6444", cluster_cidr="10.244.0.0/16", node_cidr_mask_size=24,
        node_monitor_grace_period="40s", identity="cp", service_cidr="10.96.0.0/12", credentials=None,
        root_ca_file="/pki/ca.crt", kubernetes_service_endpoints="a:8443,b:8444"),
        daemons.CONTROLLERS, controllers_parser, {"root_ca_file": "/pki/ca.crt",
                                                  "kubernetes_service_endpoints": "a:8443,b:8444"}),
    Case("scheduler", daemons.scheduler("py", api_servers="a:6443", identity="cp", verbose=True, credentials=CLIENT),
         daemons.SCHEDULER, scheduler_parser, {"api_servers": "a:6443", "identity": "cp", "verbose": True,
                                               **CLIENT_FLAGS}),
    Case("nodeagent", daemons.nodeagent(
        "py", node_name="n1", api_servers="a:6443", container_runtime_endpoint="unix:///run/c.sock",
        node_ip="10.0.0.11", listen="10.0.0.11:10250", state_dir="/s/agent", cni_conf_dir="/s/cni",
        ipam_dir="/s/ipam", pod_log_dir="/s/pods", cgroup_parent="/skiff-n1", lease_period="2s",
        node_labels={"zone": "b", "disk": "ssd"},
        register_with_taints=("a=b:NoSchedule", "c:NoExecute"), netns="/run/netns/n1", tls=(SERVING, CLIENT)),
        daemons.NODEAGENT, nodeagent_parser,
        {"node_name": "n1", "api_servers": "a:6443", "container_runtime_endpoint": "unix:///run/c.sock",
         "node_ip": "10.0.0.11", "listen": "10.0.0.11:10250", "state_dir": "/s/agent", "cni_conf_dir": "/s/cni",
         "ipam_dir": "/s/ipam", "pod_log_dir": "/s/pods", "cgroup_parent": "/skiff-n1", "lease_period": 2.0,
         "node_labels": "disk=ssd,zone=b", "register_with_taints": "a=b:NoSchedule,c:NoExecute",
         "netns": "/run/netns/n1", "verbose": False, **CLIENT_FLAGS, "tls_cert_file": "/pki/srv.crt",
         "tls_private_key_file": "/pki/srv.key", "client_ca_file": "/pki/ca.crt", "bootstrap_token": ""}),
    Case("nodeagent-plain", daemons.nodeagent(
        "py", node_name="n1", api_servers="a:6443", container_runtime_endpoint="unix:///run/c.sock", node_ip="",
        listen="127.0.0.1:10250", state_dir="/s", cni_conf_dir="/s/cni", ipam_dir="/s/ipam", pod_log_dir="/s/pods",
        cgroup_parent="", tls=None), daemons.NODEAGENT, nodeagent_parser,
        {"node_labels": "", "register_with_taints": "", "netns": "", "lease_period": 10.0, "cluster_dns": "",
         "cluster_domain": "cluster.local", "insecure": True}),
    Case("nodeagent-joining", daemons.nodeagent(
        "py", node_name="n1", api_servers="a:6443", container_runtime_endpoint="unix:///run/c.sock", node_ip="",
        listen="10.0.0.11:10250", state_dir="/s", cni_conf_dir="/s/cni", ipam_dir="/s/ipam", pod_log_dir="/s/pods",
        cgroup_parent="", tls=(SERVING, CLIENT), bootstrap_token="abcdef.0123456789abcdef"), daemons.NODEAGENT,
        nodeagent_parser, {"bootstrap_token": "abcdef.0123456789abcdef", "client_certificate": "/pki/c.crt"}),
    Case("nodeagent-cluster-dns", daemons.nodeagent(
        "py", node_name="n1", api_servers="a:6443", container_runtime_endpoint="unix:///run/c.sock", node_ip="",
        listen="127.0.0.1:10250", state_dir="/s", cni_conf_dir="/s/cni", ipam_dir="/s/ipam", pod_log_dir="/s/pods",
        cgroup_parent="", cluster_dns="169.254.20.10", cluster_domain="corp.local", tls=None), daemons.NODEAGENT,
        nodeagent_parser, {"cluster_dns": "169.254.20.10", "cluster_domain": "corp.local"}),
    Case("clusterdns", daemons.clusterdns(
        "py", api_servers="a:6443", listen="169.254.20.10:53", cluster_domain="cluster.local",
        reverse_cidrs=("10.96.0.0/12", "10.244.0.0/16"), upstreams="10.0.0.2", verbose=True, credentials=CLIENT),
        daemons.CLUSTERDNS, clusterdns_parser,
        {"api_servers": "a:6443", "listen": "169.254.20.10:53", "cluster_domain": "cluster.local",
         "reverse_cidrs": "10.96.0.0/12,10.244.0.0/16", "upstreams": "10.0.0.2", "verbose": True, **CLIENT_FLAGS}),
    Case("netproxy", daemons.netproxy(
        "py", api_servers="a:6443", node_name="n1", mode="ipvs", cluster_cidr="10.244.0.0/16",
        min_sync_period="0", iptables_backend="nft", verbose=True, credentials=None), daemons.NETPROXY,
        netproxy_parser,
        {"api_servers": "a:6443", "node_name": "n1", "mode": "ipvs", "cluster_cidr": "10.244.0.0/16",
         "min_sync_period": 0.0, "iptables_backend": "nft", "verbose": True, "insecure": True}),
    # Every daemon's metrics address: the default (loopback and the daemon's port), set, or off.
    Case("store-metrics-default", daemons.store(
        "py", name="s1", data_dir="/d", listen_client="127.0.0.1:2379", listen_peer="127.0.0.1:2380",
        initial_cluster="s1=127.0.0.1:2380", initial_cluster_token="t", tls=None), daemons.STORE, store_parser,
        {"metrics_bind_address": "127.0.0.1:2381"}),
    Case("store-metrics-shifted", daemons.store(
        "py", name="s2", data_dir="/d", listen_client="127.0.0.1:2479", listen_peer="127.0.0.1:2480",
        initial_cluster="s2=127.0.0.1:2480", initial_cluster_token="t", tls=None,
        metrics_bind_address="127.0.0.1:2481"),
        daemons.STORE, store_parser, {"metrics_bind_address": "127.0.0.1:2481"}),
    Case("apiserver-metrics-default", daemons.apiserver(
        "py", store_endpoints="a:2379", listen="a:6443", service_cidr="10.96.0.0/12",
        node_port_range="30000-32767", node_name="cp", tls=None), daemons.APISERVER, apiserver_parser,
        {"metrics_bind_address": "127.0.0.1:8080"}),
    Case("controllers-metrics-off", daemons.controllers(
        "py", api_servers="a:6443", cluster_cidr="10.244.0.0/16", node_cidr_mask_size=24,
        node_monitor_grace_period="40s", identity="cp", credentials=None, metrics_bind_address="off"),
        daemons.CONTROLLERS, controllers_parser, {"metrics_bind_address": ""}),
    Case("scheduler-metrics-default", daemons.scheduler("py", api_servers="a:6443", identity="cp", credentials=None),
         daemons.SCHEDULER, scheduler_parser, {"metrics_bind_address": "127.0.0.1:10259"}),
    Case("nodeagent-metrics-set", daemons.nodeagent(
        "py", node_name="n1", api_servers="a:6443", container_runtime_endpoint="unix:///run/c.sock", node_ip="",
        listen="0.0.0.0:10250", state_dir="/s", cni_conf_dir="/s/cni", ipam_dir="/s/ipam", pod_log_dir="/s/pods",
        cgroup_parent="", tls=None, metrics_bind_address="0.0.0.0:10255"), daemons.NODEAGENT, nodeagent_parser,
        {"metrics_bind_address": "0.0.0.0:10255"}),
    Case("netproxy-metrics-default", daemons.netproxy(
        "py", api_servers="a:6443", node_name="n1", mode="iptables", cluster_cidr="10.244.0.0/16",
        min_sync_period="1s", iptables_backend="auto", credentials=None), daemons.NETPROXY, netproxy_parser,
        {"metrics_bind_address": "127.0.0.1:10249"}),
    Case("clusterdns-metrics-default", daemons.clusterdns(
        "py", api_servers="a:6443", listen="169.254.20.10:53", cluster_domain="cluster.local",
        reverse_cidrs=("10.96.0.0/12",), credentials=None), daemons.CLUSTERDNS, clusterdns_parser,
        {"metrics_bind_address": "127.0.0.1:9153"}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_command_line_parses_as_meant(case: Case) -> None:
    assert case.argv[:3] == ["py", "-m", case.module]
    args = case.parser().parse_args(case.argv[3:])
    assert {key: getattr(args, key) for key in case.expected} == case.expected


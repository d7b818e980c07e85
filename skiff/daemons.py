"""The one definition of each Skiff daemon's command line.

Two places start Skiff's daemons: `deploy/render.py` (the lab, `make up`, the Vagrant lab and
bare-metal systemd units) and the all-in-one `python -m controlplane` (which may not import
deploy/). Both build their children's command lines here, so a flag is written once.

What must hold:
- every function is pure: it returns an argv (`python -m <module> --flag value ...`) and
  starts nothing;
- every argv parses with its daemon's own `build_parser()` and means what the arguments
  say (tests/unit/skiff/test_daemons.py parses each one back);
- durations are passed as text in skiff.daemon's form (`40s`, `1m30s`, `0.5`), and `-v`
  is the one verbosity flag of every daemon;
- TLS is a required argument of every daemon: its files (skiff.tls objects) or None, which
  is written out as `--insecure` (development only), so plaintext is never chosen by leaving
  an argument out;
- every daemon takes `metrics_bind_address` (its /metrics, /healthz, /livez, /readyz;
  skiff/metrics.py): empty leaves the daemon's default (127.0.0.1 and its port in
  skiff/defaults.py), "off" turns the endpoints off.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from skiff.tls import ApiServerTLS, Credentials, ServerTLS, ServiceAccountKeys, client_flags, server_flags

STORE = "controlplane.store"
APISERVER = "controlplane.apiserver"
CONTROLLERS = "controlplane.controllers"
SCHEDULER = "controlplane.scheduler"
NODEAGENT = "nodeagent"
NETPROXY = "netproxy"
CLUSTERDNS = "clusterdns"


def _py(python: str, module: str) -> list[str]:
    return [python, "-m", module]


def _verbose(verbose: bool) -> list[str]:
    return ["-v"] if verbose else []


def _metrics(address: str) -> list[str]:
    if not address:
        return []
    return ["--metrics-bind-address", "" if address == "off" else address]


def store(python: str, *, name: str, data_dir: str, listen_client: str, listen_peer: str,
          initial_cluster: str, initial_cluster_token: str, initial_cluster_state: str = "new",
          tls: ServerTLS | None, password_file: str = "", insecure_no_password: bool = False,
          metrics_bind_address: str = "",
          verbose: bool = False) -> list[str]:
    """A store member. Without a password file or `insecure_no_password`, the member reads
    $SKIFF_STORE_PASSWORD (the caller passes it in the environment). `tls`: mutual TLS on the
    client port (etcd's flags)."""
    argv = [*_py(python, STORE), "--name", name, "--data-dir", data_dir,
            "--listen-client", listen_client, "--listen-peer", listen_peer,
            "--initial-cluster", initial_cluster, "--initial-cluster-state", initial_cluster_state,
            "--initial-cluster-token", initial_cluster_token]
    if password_file:
        argv += ["--password-file", password_file]
    elif insecure_no_password:
        argv += ["--insecure-no-password"]
    if tls is None:
        argv += ["--insecure"]
    else:
        argv += ["--cert-file", tls.cert_file, "--key-file", tls.key_file, "--trusted-ca-file", tls.client_ca_file,
                 "--client-cert-auth"]
    return argv + _metrics(metrics_bind_address) + _verbose(verbose)


def apiserver(python: str, *, store_endpoints: str, listen: str, service_cidr: str, node_port_range: str,
              node_name: str, tls: ApiServerTLS | None, default_not_ready_toleration_seconds: int = 300,
              default_unreachable_toleration_seconds: int = 300, http_listen: str = "",
              authorization_mode: str = "", audit_log_path: str = "", metrics_bind_address: str = "",
              verbose: bool = False) -> list[str]:
    """`http_listen` set: the api-server also serves the Kubernetes REST API there (docs/kubernetes-api.md).
    `authorization_mode` empty: the api-server's default (Node,RBAC); `audit_log_path` empty: no audit log."""
    return [*_py(python, APISERVER), "--store-endpoints", store_endpoints, "--listen", listen,
            *(["--http-listen", http_listen] if http_listen else []),
            "--service-cidr", service_cidr, "--node-port-range", node_port_range, "--node-name", node_name,
            "--default-not-ready-toleration-seconds", str(default_not_ready_toleration_seconds),
            "--default-unreachable-toleration-seconds", str(default_unreachable_toleration_seconds),
            *(["--authorization-mode", authorization_mode] if authorization_mode else []),
            *(["--audit-log-path", audit_log_path] if audit_log_path else []),
            *apiserver_tls_flags(tls), *_metrics(metrics_bind_address), *_verbose(verbose)]


def apiserver_tls_flags(tls: ApiServerTLS | None) -> list[str]:
    """The api-server's TLS flags (`--insecure` for None)."""
    if tls is None:
        return ["--insecure"]
    store = [] if tls.store is None else ["--etcd-cafile", tls.store.ca_file, "--etcd-certfile", tls.store.cert_file,
                                          "--etcd-keyfile", tls.store.key_file]
    return [*server_flags(tls.serving), *store,
            "--kubelet-certificate-authority", tls.kubelet.ca_file,
            "--kubelet-client-certificate", tls.kubelet.cert_file, "--kubelet-client-key", tls.kubelet.key_file,
            *service_account_flags(tls.service_account)]


def service_account_flags(keys: ServiceAccountKeys | None) -> list[str]:
    """kube-apiserver's service-account token flags ([] without keys: no tokens)."""
    if keys is None:
        return []
    return ["--service-account-key-file", keys.key_file, "--service-account-signing-key-file", keys.signing_key_file,
            "--service-account-issuer", keys.issuer]


def controllers(python: str, *, api_servers: str, cluster_cidr: str, node_cidr_mask_size: int,
                node_monitor_grace_period: str, identity: str, credentials: Credentials | None,
                service_cidr: str = "", cluster_signing_cert_file: str = "", cluster_signing_key_file: str = "",
                root_ca_file: str = "", kubernetes_service_endpoints: str = "", metrics_bind_address: str = "",
                verbose: bool = False) -> list[str]:
    """`service_cidr` set: the controllers also keep default/kubernetes (its ClusterIP is the first address).
    `cluster_signing_*`: the CA that signs approved node certificates (kube-controller-manager's flags).
    `root_ca_file`: the CA bundle published as kube-root-ca.crt in every namespace.
    `kubernetes_service_endpoints`: the api-servers' HTTPS endpoints (same order), where default/kubernetes leads."""
    argv = [*_py(python, CONTROLLERS), "--api-servers", api_servers, "--cluster-cidr", cluster_cidr,
            "--node-cidr-mask-size", str(node_cidr_mask_size),
            "--node-monitor-grace-period", node_monitor_grace_period, "--identity", identity]
    if service_cidr:
        argv += ["--service-cidr", service_cidr]
    if kubernetes_service_endpoints:
        argv += ["--kubernetes-service-endpoints", kubernetes_service_endpoints]
    if cluster_signing_cert_file:
        argv += ["--cluster-signing-cert-file", cluster_signing_cert_file,
                 "--cluster-signing-key-file", cluster_signing_key_file]
    if root_ca_file:
        argv += ["--root-ca-file", root_ca_file]
    return argv + client_flags(credentials) + _metrics(metrics_bind_address) + _verbose(verbose)


def scheduler(python: str, *, api_servers: str, identity: str, credentials: Credentials | None,
              metrics_bind_address: str = "", verbose: bool = False) -> list[str]:
    return [*_py(python, SCHEDULER), "--api-servers", api_servers, "--identity", identity,
            *client_flags(credentials), *_metrics(metrics_bind_address), *_verbose(verbose)]


def nodeagent(python: str, *, node_name: str, api_servers: str, container_runtime_endpoint: str, node_ip: str,
              listen: str, state_dir: str, cni_conf_dir: str, ipam_dir: str, pod_log_dir: str,
              cgroup_parent: str, lease_period: str = "10s", node_labels: Mapping[str, str] | None = None,
              register_with_taints: Sequence[str] = (), netns: str = "", cluster_dns: str = "",
              cluster_domain: str = "", tls: tuple[ServerTLS, Credentials] | None, bootstrap_token: str = "",
              bootstrap_servers: Sequence[str] = (), metrics_bind_address: str = "",
              verbose: bool = False) -> list[str]:
    """`tls`: (serving, api-server credentials). `bootstrap_token`: join with it first (the
    credentials' files are then written by the join)."""
    argv = [*_py(python, NODEAGENT), "--node-name", node_name, "--api-servers", api_servers,
            "--container-runtime-endpoint", container_runtime_endpoint, "--node-ip", node_ip,
            "--listen", listen, "--state-dir", state_dir, "--cni-conf-dir", cni_conf_dir,
            "--ipam-dir", ipam_dir, "--pod-log-dir", pod_log_dir, "--cgroup-parent", cgroup_parent,
            "--lease-period", lease_period]
    if cluster_dns:
        argv += ["--cluster-dns", cluster_dns]
    if cluster_domain:
        argv += ["--cluster-domain", cluster_domain]
    if node_labels:
        argv += ["--node-labels", ",".join(f"{k}={v}" for k, v in sorted(node_labels.items()))]
    if register_with_taints:
        argv += ["--register-with-taints", ",".join(register_with_taints)]
    if netns:
        argv += ["--netns", netns]
    if tls is None:
        argv += ["--insecure"]
    else:
        argv += [*server_flags(tls[0]), *client_flags(tls[1])]
    if bootstrap_token:
        argv += ["--bootstrap-token", bootstrap_token, "--bootstrap-server", ",".join(bootstrap_servers)]
    return argv + _metrics(metrics_bind_address) + _verbose(verbose)


def netproxy(python: str, *, api_servers: str, node_name: str, mode: str, cluster_cidr: str,
             min_sync_period: str, iptables_backend: str, credentials: Credentials | None,
             metrics_bind_address: str = "", verbose: bool = False) -> list[str]:
    return [*_py(python, NETPROXY), "--api-servers", api_servers, "--node-name", node_name, "--mode", mode,
            "--cluster-cidr", cluster_cidr, "--min-sync-period", min_sync_period,
            "--iptables-backend", iptables_backend, *client_flags(credentials), *_metrics(metrics_bind_address),
            *_verbose(verbose)]


def clusterdns(python: str, *, api_servers: str, listen: str, cluster_domain: str, reverse_cidrs: Sequence[str],
               credentials: Credentials | None, upstreams: str = "", metrics_bind_address: str = "",
               verbose: bool = False) -> list[str]:
    argv = [*_py(python, CLUSTERDNS), "--api-servers", api_servers, "--listen", listen,
            "--cluster-domain", cluster_domain, "--reverse-cidrs", ",".join(reverse_cidrs)]
    if upstreams:
        argv += ["--upstreams", upstreams]
    return argv + client_flags(credentials) + _metrics(metrics_bind_address) + _verbose(verbose)

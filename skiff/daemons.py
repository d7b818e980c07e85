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
- every daemon takes `metrics_bind_address` (its /metrics, /healthz, /livez, /readyz;
  skiff/metrics.py): empty leaves the daemon's default (127.0.0.1 and its port in
  skiff/defaults.py), "off" turns the endpoints off.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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
          password_file: str = "", insecure_no_password: bool = False, metrics_bind_address: str = "",
          verbose: bool = False) -> list[str]:
    """A store member. Without a password file or `insecure_no_password`, the member reads
    $SKIFF_STORE_PASSWORD (the caller passes it in the environment)."""
    argv = [*_py(python, STORE), "--name", name, "--data-dir", data_dir,
            "--listen-client", listen_client, "--listen-peer", listen_peer,
            "--initial-cluster", initial_cluster, "--initial-cluster-state", initial_cluster_state,
            "--initial-cluster-token", initial_cluster_token]
    if password_file:
        argv += ["--password-file", password_file]
    elif insecure_no_password:
        argv += ["--insecure-no-password"]
    return argv + _metrics(metrics_bind_address) + _verbose(verbose)


def apiserver(python: str, *, store_endpoints: str, listen: str, service_cidr: str, node_port_range: str,
              node_name: str, default_not_ready_toleration_seconds: int = 300,
              default_unreachable_toleration_seconds: int = 300, http_listen: str = "",
              metrics_bind_address: str = "", verbose: bool = False) -> list[str]:
    """`http_listen` set: the api-server also serves the Kubernetes REST API there (docs/kubernetes-api.md)."""
    return [*_py(python, APISERVER), "--store-endpoints", store_endpoints, "--listen", listen,
            *(["--http-listen", http_listen] if http_listen else []),
            "--service-cidr", service_cidr, "--node-port-range", node_port_range, "--node-name", node_name,
            "--default-not-ready-toleration-seconds", str(default_not_ready_toleration_seconds),
            "--default-unreachable-toleration-seconds", str(default_unreachable_toleration_seconds),
            *_metrics(metrics_bind_address), *_verbose(verbose)]


def controllers(python: str, *, api_servers: str, cluster_cidr: str, node_cidr_mask_size: int,
                node_monitor_grace_period: str, identity: str,
                service_cidr: str = "", metrics_bind_address: str = "", verbose: bool = False) -> list[str]:
    """`service_cidr` set: the controllers also keep default/kubernetes (its ClusterIP is the first address)."""
    argv = [*_py(python, CONTROLLERS), "--api-servers", api_servers, "--cluster-cidr", cluster_cidr,
            "--node-cidr-mask-size", str(node_cidr_mask_size),
            "--node-monitor-grace-period", node_monitor_grace_period, "--identity", identity]
    if service_cidr:
        argv += ["--service-cidr", service_cidr]
    return argv + _metrics(metrics_bind_address) + _verbose(verbose)


def scheduler(python: str, *, api_servers: str, identity: str, metrics_bind_address: str = "",
              verbose: bool = False) -> list[str]:
    return [*_py(python, SCHEDULER), "--api-servers", api_servers, "--identity", identity,
            *_metrics(metrics_bind_address), *_verbose(verbose)]


def nodeagent(python: str, *, node_name: str, api_servers: str, container_runtime_endpoint: str, node_ip: str,
              listen: str, state_dir: str, cni_conf_dir: str, ipam_dir: str, pod_log_dir: str,
              cgroup_parent: str, lease_period: str = "10s", node_labels: Mapping[str, str] | None = None,
              register_with_taints: Sequence[str] = (), netns: str = "", cluster_dns: str = "",
              cluster_domain: str = "", metrics_bind_address: str = "", verbose: bool = False) -> list[str]:
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
    return argv + _metrics(metrics_bind_address) + _verbose(verbose)


def netproxy(python: str, *, api_servers: str, node_name: str, mode: str, cluster_cidr: str,
             min_sync_period: str, iptables_backend: str, metrics_bind_address: str = "",
             verbose: bool = False) -> list[str]:
    return [*_py(python, NETPROXY), "--api-servers", api_servers, "--node-name", node_name, "--mode", mode,
            "--cluster-cidr", cluster_cidr, "--min-sync-period", min_sync_period,
            "--iptables-backend", iptables_backend, *_metrics(metrics_bind_address), *_verbose(verbose)]


def clusterdns(python: str, *, api_servers: str, listen: str, cluster_domain: str, reverse_cidrs: Sequence[str],
               upstreams: str = "", metrics_bind_address: str = "", verbose: bool = False) -> list[str]:
    argv = [*_py(python, CLUSTERDNS), "--api-servers", api_servers, "--listen", listen,
            "--cluster-domain", cluster_domain, "--reverse-cidrs", ",".join(reverse_cidrs)]
    if upstreams:
        argv += ["--upstreams", upstreams]
    return argv + _metrics(metrics_bind_address) + _verbose(verbose)

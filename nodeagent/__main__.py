"""`python -m nodeagent` / `skiff-nodeagent`: run a node agent.

    skiff-nodeagent --node-name n1 --api-servers 10.0.0.10:6443 \
        --container-runtime-endpoint unix:///run/containerd/containerd.sock --node-ip 10.0.0.11

`--fake-runtime` runs against an in-memory runtime (no containerd, no host networking): for
control-plane tests and benchmarks with many simulated nodes.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from nodeagent import metrics
from nodeagent.agent import AgentConfig, NodeAgent
from nodeagent.bootstrap import BootstrapError, bootstrap
from nodeagent.cri import GrpcRuntime, Runtime
from nodeagent.dns import DnsSettings, ResolvConf, parse_resolv_conf
from nodeagent.netns import NodeNetwork
from nodeagent.plan import PlanConfig
from nodeagent.server import start_server
from skiff import defaults, hostconfig, quantity, tls
from skiff import metrics as skiff_metrics
from skiff.client import Client
from skiff.daemon import add_verbose_flag, duration, run_until_signalled, setup_logging
from skiff.metrics import add_metrics_flag
from skiff.validation import TAINT_EFFECTS
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("nodeagent")


def parse_kv(text: str, flag: str) -> dict[str, str]:
    out = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if "=" not in part:
            raise SystemExit(f"{flag}: expected key=value[,key=value], got {part!r}")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def parse_taints(text: str) -> list[t.Taint]:
    """`key=value:Effect,key:Effect` as kubelet's --register-with-taints takes them."""
    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        head, sep, effect = part.rpartition(":")
        if not sep or effect not in TAINT_EFFECTS:
            raise SystemExit(f"--register-with-taints: expected key[=value]:Effect with Effect one of "
                             f"{', '.join(TAINT_EFFECTS)}, got {part!r}")
        key, _, value = head.partition("=")
        out.append(t.Taint(key=key, value=value, effect=effect))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skiff-nodeagent", description="Skiff node agent (kubelet role) over CRI.")
    p.add_argument("--node-name", required=True)
    p.add_argument("--api-servers", required=True, help="host:port[,host:port...] of the api-server(s)")
    p.add_argument("--container-runtime-endpoint", default="unix:///run/containerd/containerd.sock")
    p.add_argument("--node-ip", default="", help="the node's InternalIP (also hostIP of its pods)")
    p.add_argument("--listen", default="",
                   help=f"address of the agent's gRPC service (logs, exec); default --node-ip:{defaults.AGENT_PORT} "
                        "(127.0.0.1 without --node-ip), never every interface")
    p.add_argument("--state-dir", default="/var/lib/skiff/node",
                   help="base of the default CNI conf dir, IPAM dir, pod logs and pod volumes")
    p.add_argument("--cni-conf-dir", default="", help="where to write the CNI conflist (default STATE/cni)")
    p.add_argument("--ipam-dir", default="", help="host-local IPAM dataDir (default STATE/ipam)")
    p.add_argument("--pod-log-dir", default="", help="container logs (default STATE/pods)")
    p.add_argument("--local-path-dir", default="",
                   help="directories of local-path PersistentVolumes on this node (default STATE/storage)")
    p.add_argument("--pod-cidr", default="", help="use this podCIDR instead of waiting for the Node's spec.podCIDR")
    p.add_argument("--cgroup-parent", default="", help="cgroupfs parent of all pod sandboxes, e.g. /skiff-n1")
    p.add_argument("--netns", default="", help="do node networking (routes, sysctls, probes) in this netns path")
    p.add_argument("--no-network", action="store_true", help="do not manage CNI config, routes or sysctls")
    p.add_argument("--fake-runtime", action="store_true", help="use an in-memory runtime (simulated node)")
    p.add_argument("--capacity", default="", help="override capacity, e.g. cpu=4,memory=8Gi,pods=110")
    p.add_argument("--node-labels", default="", help="extra Node labels, e.g. zone=a,disk=ssd")
    p.add_argument("--register-with-taints", default="",
                   help="taints the Node is created with, e.g. node-role.kubernetes.io/control-plane:NoSchedule")
    p.add_argument("--cluster-dns", default="",
                   help="DNS server IP(s) pods with dnsPolicy ClusterFirst use, comma-separated "
                        f"(the node-local clusterdns listens on {defaults.NODE_LOCAL_DNS_IP}); "
                        "empty: ClusterFirst falls back to Default")
    p.add_argument("--cluster-domain", default=defaults.CLUSTER_DOMAIN,
                   help=f"the cluster's DNS domain (default {defaults.CLUSTER_DOMAIN})")
    p.add_argument("--resolv-conf", default="/etc/resolv.conf",
                   help="resolver configuration pods with dnsPolicy Default get (loopback nameservers "
                        "dropped); empty: none")
    p.add_argument("--backoff-base", type=duration, default=10.0, help="CrashLoopBackOff first delay (default 10s)")
    p.add_argument("--backoff-max", type=duration, default=300.0, help="CrashLoopBackOff maximum delay (default 5m)")
    p.add_argument("--relist-period", type=duration, default=1.0,
                   help="how often the runtime's pods are listed again (default 1s)")
    p.add_argument("--housekeeping-interval", type=duration, default=10.0,
                   help="time between two samples of the node's and pods' resource usage, the window of "
                        "`kubectl top` (default 10s)")
    p.add_argument("--lease-period", type=duration, default=10.0,
                   help="how often the node's Lease is renewed (default 10s)")
    add_metrics_flag(p, defaults.AGENT_METRICS_PORT)
    p.add_argument("--container-log-max-size", type=_log_size, default="10Mi",
                   help="a container's log file is rotated once it reaches this size (the kubelet's "
                        "containerLogMaxSize; default 10Mi)")
    p.add_argument("--container-log-max-files", type=_log_files, default=5,
                   help="log files kept per container, the live one included, at least 2 (the kubelet's "
                        "containerLogMaxFiles; default %(default)s)")
    tls.add_server_flags(p, what="logs and exec for the api-server; client certificates required")
    tls.add_client_flags(p)
    p.add_argument("--bootstrap-token", default="",
                   help="join with this bootstrap token (<id>.<secret>) when --client-certificate does not exist yet: "
                        "send a CSR for system:node:<name>, write the signed certificate there, and use only it")
    p.add_argument("--bootstrap-server", default="",
                   help="the api-servers' HTTPS URLs for --bootstrap-token (https://IP:PORT[,...])")
    tls.add_insecure_flag(p)
    add_verbose_flag(p)
    return p


def _log_size(text: str) -> int:
    try:
        size = quantity.to_bytes(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (examples: 10Mi, 512Ki, 1G)") from None
    if size < 1024:
        raise argparse.ArgumentTypeError(f"{text!r}: a log needs at least 1Ki before it is rotated")
    return size


def _log_files(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if count < 2:
        raise argparse.ArgumentTypeError(f"{text}: at least 2 (the live file and one rotated)")
    return count


def host_resolv(path: str) -> ResolvConf:
    if not path:
        return ResolvConf()
    try:
        return parse_resolv_conf(Path(path).read_text())
    except OSError as exc:
        log.warning("--resolv-conf %s: %s; pods with dnsPolicy Default get no nameserver", path, exc)
        return ResolvConf()


def config_from_args(args: argparse.Namespace, port: int) -> AgentConfig:
    paths = hostconfig.NodePaths(Path(args.state_dir))
    dns = DnsSettings(cluster_dns=tuple(s.strip() for s in args.cluster_dns.split(",") if s.strip()),
                      cluster_domain=args.cluster_domain, host=host_resolv(args.resolv_conf))
    return AgentConfig(
        node_name=args.node_name, node_ip=args.node_ip, port=port,
        pod_log_dir=args.pod_log_dir or str(paths.pod_logs),
        volume_dir=str(paths.pod_volumes),
        local_path_dir=args.local_path_dir or str(paths.local_volumes),
        cni_conf_dir=args.cni_conf_dir or str(paths.cni_conf_dir),
        ipam_dir=args.ipam_dir or str(paths.ipam_dir),
        pod_cidr=args.pod_cidr, cgroup_parent=args.cgroup_parent,
        manage_network=not (args.no_network or args.fake_runtime),
        capacity=parse_kv(args.capacity, "--capacity"), labels=parse_kv(args.node_labels, "--node-labels"),
        taints=parse_taints(args.register_with_taints),
        relist_period=args.relist_period, lease_period=args.lease_period, stats_period=args.housekeeping_interval,
        container_log_max_size=args.container_log_max_size, container_log_max_files=args.container_log_max_files,
        plan=PlanConfig(backoff_base=args.backoff_base, backoff_max=args.backoff_max),
        dns=dns, pod_dir="" if args.fake_runtime else str(Path(args.state_dir) / "pod-data"),
    )


async def run(args: argparse.Namespace, serving: tls.ServerTLS | None, credentials: tls.Credentials | None) -> int:
    runtime: Runtime
    if args.fake_runtime:
        from nodeagent.fakecri import FakeRuntime

        runtime = FakeRuntime(pod_cidr=args.pod_cidr or "10.88.0.0/16", pullable=lambda image: True)
    else:
        runtime = GrpcRuntime(args.container_runtime_endpoint)
    if args.bootstrap_token and credentials is not None:
        await bootstrap(servers=[s.strip() for s in args.bootstrap_server.split(",") if s.strip()],
                        token=args.bootstrap_token, ca_file=credentials.ca_file, cert_file=credentials.cert_file,
                        key_file=credentials.key_file, node_name=args.node_name, node_ip=args.node_ip)
    client = Client(args.api_servers, credentials=credentials)
    net = NodeNetwork(args.netns)
    agent = NodeAgent(client, runtime, config_from_args(args, 0), net=net)
    # The service is bound first: the Node publishes its port (daemonEndpoints.kubeletEndpoint).
    listen = args.listen or f"{args.node_ip or '127.0.0.1'}:{defaults.AGENT_PORT}"
    server, agent.config.port = await start_server(agent, listen, serving)
    log.info("node agent %s serving logs/exec on port %d", args.node_name, agent.config.port)
    metrics.NODE_NAME.labels(args.node_name).set(1)
    health = skiff_metrics.Health(ready={
        "runtime": lambda: agent.runtime_error and f"container runtime: {agent.runtime_error}",
        "registered": skiff_metrics.ok_when(agent.registered.is_set, "the Node is not registered yet")})
    try:
        async with skiff_metrics.serving(args.metrics_bind_address, health, what="node agent metrics"):
            await agent.start()
            await asyncio.get_running_loop().create_future()  # until SIGTERM/SIGINT cancels us
    finally:
        await agent.stop()
        await server.stop(1)
        await client.close()
        await runtime.close()
        net.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        serving = tls.server_tls(args, require_client_cert=True)
        credentials = tls.client_credentials(args)
    except tls.TLSConfigError as exc:
        print(f"skiff-nodeagent: {exc}", file=sys.stderr)
        return 2
    if args.insecure:
        tls.warn_insecure("node agent")
    try:
        return run_until_signalled(run(args, serving, credentials))
    except BootstrapError as exc:
        print(f"skiff-nodeagent: cannot join: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

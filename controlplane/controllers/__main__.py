"""`python -m controlplane.controllers` (skiff-controllers): the controller manager daemon."""

from __future__ import annotations

import argparse
import logging
import sys

from controlplane.common.leaderelection import LeaderElector, add_leader_election_flags, leader_config
from controlplane.controllers import manager
from controlplane.controllers.cidrset import CidrError, CidrSet
from controlplane.controllers.nodelifecycle import EvictionOptions
from skiff import defaults, metrics, tls
from skiff.client import Client
from skiff.daemon import add_verbose_flag, duration, run_until_signalled, setup_logging
from skiff.metrics import add_metrics_flag

log = logging.getLogger("skiff.controllers")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skiff-controllers", description="Skiff controller manager.")
    p.add_argument("--api-servers", required=True, metavar="HOST:PORT[,...]",
                   help="api-server endpoints (failover in order of availability)")
    p.add_argument("--controllers", default="*",
                   help=f"comma-separated controllers to run, * for all ({','.join(manager.ALL_CONTROLLERS)})")
    p.add_argument("--node-monitor-grace-period", type=duration, default=40.0,
                   help="time without heartbeat before a node is marked unhealthy (default 40s)")
    p.add_argument("--node-eviction-rate", type=float, default=0.1,
                   help="nodes per second tainted NoExecute (their pods evicted) in a healthy zone (default 0.1)")
    p.add_argument("--secondary-node-eviction-rate", type=float, default=0.01,
                   help="the same in a partially disrupted zone larger than --large-cluster-size-threshold "
                        "(default 0.01; smaller zones stop evicting)")
    p.add_argument("--unhealthy-zone-threshold", type=float, default=0.55,
                   help="share of a zone's nodes unhealthy from which it stops evicting (default 0.55)")
    p.add_argument("--large-cluster-size-threshold", type=int, default=50,
                   help="zone size above which a partial disruption evicts at the secondary rate (default 50)")
    p.add_argument("--node-monitor-period", type=duration, default=5.0,
                   help="how often node health is checked (default 5s)")
    p.add_argument("--cluster-cidr", default=defaults.CLUSTER_CIDR, help="CIDR pod CIDRs are allocated from")
    p.add_argument("--service-cidr", default="",
                   help="the api-servers' service CIDR: keep the default/kubernetes Service (first address) "
                        "with the --api-servers as its endpoints; empty: do not")
    p.add_argument("--kubernetes-service-endpoints", default="", metavar="HOST:PORT[,...]",
                   help="the HTTPS (Kubernetes REST API) endpoints of the --api-servers, in the same order: the "
                        "default/kubernetes Service's Endpoints; empty: the --api-servers themselves")
    p.add_argument("--node-cidr-mask-size", type=int, default=defaults.NODE_CIDR_MASK_SIZE,
                   help="prefix length of each node's pod CIDR")
    p.add_argument("--concurrent-deployment-syncs", type=int, default=5)
    p.add_argument("--concurrent-replicaset-syncs", type=int, default=5)
    p.add_argument("--concurrent-endpoint-syncs", type=int, default=5)
    p.add_argument("--concurrent-gc-syncs", type=int, default=10)
    p.add_argument("--endpoint-updates-batch-period", type=duration, default=manager.BATCH_PERIOD,
                   help="at most one Endpoints update per Service per period; an update taking a ready address "
                        f"away is written at once (default {manager.BATCH_PERIOD:g}s, 0: every change at once)")
    p.add_argument("--status-updates-batch-period", type=duration, default=manager.BATCH_PERIOD,
                   help="at most one status update per ReplicaSet and Deployment per period while only its counts "
                        f"move (default {manager.BATCH_PERIOD:g}s, 0: every change at once)")
    add_leader_election_flags(p, "skiff-controller-manager")
    p.add_argument("--cluster-signing-cert-file", default="",
                   help="the cluster CA certificate that signs approved node certificates (CertificateSigningRequests)")
    p.add_argument("--cluster-signing-key-file", default="", help="its private key")
    p.add_argument("--root-ca-file", default="",
                   help="the cluster CA bundle, published as the kube-root-ca.crt ConfigMap (key ca.crt) in every "
                        "namespace for pods to verify the api-server with; empty: not published")
    tls.add_daemon_client_flags(p)
    add_metrics_flag(p, defaults.CONTROLLERS_METRICS_PORT)
    add_verbose_flag(p)
    return p


def options_from(args: argparse.Namespace) -> manager.Options:
    names = manager.ALL_CONTROLLERS if args.controllers.strip() in ("*", "") else tuple(
        c.strip() for c in args.controllers.split(",") if c.strip())
    return manager.Options(
        controllers=names, node_monitor_grace_period=args.node_monitor_grace_period,
        node_monitor_period=args.node_monitor_period,
        eviction=EvictionOptions(rate=args.node_eviction_rate, secondary_rate=args.secondary_node_eviction_rate,
                                 unhealthy_zone_threshold=args.unhealthy_zone_threshold,
                                 large_cluster_size_threshold=args.large_cluster_size_threshold),
        cluster_cidr=args.cluster_cidr, node_cidr_mask_size=args.node_cidr_mask_size,
        service_cidr=args.service_cidr, cluster_signing_cert_file=args.cluster_signing_cert_file,
        cluster_signing_key_file=args.cluster_signing_key_file, root_ca_file=args.root_ca_file,
        api_servers=tuple(a.strip() for a in args.api_servers.split(",") if a.strip()),
        kubernetes_service_endpoints=tuple(a.strip() for a in args.kubernetes_service_endpoints.split(",")
                                           if a.strip()),
        endpoint_updates_batch_period=args.endpoint_updates_batch_period,
        status_updates_batch_period=args.status_updates_batch_period,
        workers={"deployment": args.concurrent_deployment_syncs, "replicaset": args.concurrent_replicaset_syncs,
                 "endpoints": args.concurrent_endpoint_syncs, "garbagecollector": args.concurrent_gc_syncs,
                 "nodeipam": 1})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        options = options_from(args)
        CidrSet(options.cluster_cidr, options.node_cidr_mask_size)
        if options.endpoint_updates_batch_period < 0 or options.status_updates_batch_period < 0:
            raise ValueError("--endpoint-updates-batch-period and --status-updates-batch-period must not be negative")
        if options.eviction.rate < 0 or options.eviction.secondary_rate < 0:
            raise ValueError("--node-eviction-rate and --secondary-node-eviction-rate must not be negative")
        if not 0 < options.eviction.unhealthy_zone_threshold <= 1:
            raise ValueError("--unhealthy-zone-threshold must be in (0, 1]")
        if options.kubernetes_service_endpoints and \
                len(options.kubernetes_service_endpoints) != len(options.api_servers):
            raise ValueError("--kubernetes-service-endpoints: give one per --api-servers endpoint, in the same order")
        unknown = set(options.controllers) - set(manager.ALL_CONTROLLERS)
        if unknown:
            raise ValueError(f"--controllers: unknown {', '.join(sorted(unknown))}")
        election = leader_config(args) if args.leader_elect else None
    except (CidrError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    options.credentials = tls.daemon_credentials(args, "controller-manager")

    async def serve() -> None:
        client = Client(args.api_servers, credentials=options.credentials)
        try:
            async with metrics.serving(args.metrics_bind_address, what="controller manager metrics"):
                if election is None:
                    await manager.run(client, options)
                else:
                    await LeaderElector(client, election).run(lambda: manager.run(client, options))
        finally:
            await client.close()

    return run_until_signalled(serve())


if __name__ == "__main__":
    sys.exit(main())

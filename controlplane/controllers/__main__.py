"""`python -m controlplane.controllers` (skiff-controllers): the controller manager daemon."""

from __future__ import annotations

import argparse
import logging
import sys

from controlplane.common.leaderelection import LeaderElector, add_leader_election_flags, leader_config
from controlplane.controllers import manager
from controlplane.controllers.cidrset import CidrError, CidrSet
from skiff import defaults
from skiff.client import Client
from skiff.daemon import add_verbose_flag, duration, run_until_signalled, setup_logging

log = logging.getLogger("skiff.controllers")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skiff-controllers", description="Skiff controller manager.")
    p.add_argument("--api-servers", required=True, metavar="HOST:PORT[,...]",
                   help="api-server endpoints (failover in order of availability)")
    p.add_argument("--controllers", default="*",
                   help=f"comma-separated controllers to run, * for all ({','.join(manager.ALL_CONTROLLERS)})")
    p.add_argument("--node-monitor-grace-period", type=duration, default=40.0,
                   help="time without heartbeat before a node is marked unhealthy (default 40s)")
    p.add_argument("--pod-eviction-timeout", type=duration, default=60.0,
                   help="time a node stays unhealthy before its pods are deleted (default 60s)")
    p.add_argument("--node-monitor-period", type=duration, default=5.0,
                   help="how often node health is checked (default 5s)")
    p.add_argument("--cluster-cidr", default=defaults.CLUSTER_CIDR, help="CIDR pod CIDRs are allocated from")
    p.add_argument("--service-cidr", default="",
                   help="the api-servers' service CIDR: keep the default/kubernetes Service (first address) "
                        "with the --api-servers as its endpoints; empty: do not")
    p.add_argument("--node-cidr-mask-size", type=int, default=defaults.NODE_CIDR_MASK_SIZE,
                   help="prefix length of each node's pod CIDR")
    p.add_argument("--concurrent-deployment-syncs", type=int, default=5)
    p.add_argument("--concurrent-replicaset-syncs", type=int, default=5)
    p.add_argument("--concurrent-endpoint-syncs", type=int, default=5)
    p.add_argument("--concurrent-gc-syncs", type=int, default=10)
    add_leader_election_flags(p, "skiff-controller-manager")
    add_verbose_flag(p)
    return p


def options_from(args: argparse.Namespace) -> manager.Options:
    names = manager.ALL_CONTROLLERS if args.controllers.strip() in ("*", "") else tuple(
        c.strip() for c in args.controllers.split(",") if c.strip())
    return manager.Options(
        controllers=names, node_monitor_grace_period=args.node_monitor_grace_period,
        pod_eviction_timeout=args.pod_eviction_timeout, node_monitor_period=args.node_monitor_period,
        cluster_cidr=args.cluster_cidr, node_cidr_mask_size=args.node_cidr_mask_size,
        service_cidr=args.service_cidr,
        api_servers=tuple(a.strip() for a in args.api_servers.split(",") if a.strip()),
        workers={"deployment": args.concurrent_deployment_syncs, "replicaset": args.concurrent_replicaset_syncs,
                 "endpoints": args.concurrent_endpoint_syncs, "garbagecollector": args.concurrent_gc_syncs,
                 "nodeipam": 1})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        options = options_from(args)
        CidrSet(options.cluster_cidr, options.node_cidr_mask_size)
        unknown = set(options.controllers) - set(manager.ALL_CONTROLLERS)
        if unknown:
            raise ValueError(f"--controllers: unknown {', '.join(sorted(unknown))}")
        election = leader_config(args) if args.leader_elect else None
    except (CidrError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    async def serve() -> None:
        client = Client(args.api_servers)
        try:
            if election is None:
                await manager.run(client, options)
            else:
                await LeaderElector(client, election).run(lambda: manager.run(client, options))
        finally:
            await client.close()

    return run_until_signalled(serve())


if __name__ == "__main__":
    sys.exit(main())

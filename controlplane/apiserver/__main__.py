"""`python -m controlplane.apiserver` / `skiff-apiserver`: run one api-server process.

It refuses to start when the service CIDR overlaps a network of the host it runs on: a
ClusterIP allocated on a host's address would shadow that host.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import subprocess
import sys

from controlplane.apiserver.allocator import parse_cidr, parse_port_range
from controlplane.apiserver.defaults import DEFAULT_TOLERATION_SECONDS
from controlplane.apiserver.limits import Limits
from controlplane.apiserver.registry import Options
from controlplane.apiserver.server import Config, FatalError, StartupError, serve
from skiff import defaults
from skiff.daemon import add_verbose_flag, duration, setup_logging

log = logging.getLogger("skiff.apiserver")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skiff-apiserver", description="The Skiff api-server.")
    p.add_argument("--store-endpoints", default=f"127.0.0.1:{defaults.STORE_CLIENT_PORT}",
                   help="etcd v3 endpoints (the Skiff store or etcd), comma-separated (default %(default)s)")
    p.add_argument("--listen", default=f"127.0.0.1:{defaults.API_PORT}",
                   help="address:port to serve gRPC on (default %(default)s)")
    p.add_argument("--http-listen", default="",
                   help="address:port to serve the Kubernetes REST API on, plain HTTP (empty: not served; "
                        f"{defaults.KUBE_API_PORT} is the usual port)")
    p.add_argument("--service-cidr", default=defaults.SERVICE_CIDR, help="ClusterIP range (default %(default)s)")
    p.add_argument("--node-port-range", default=defaults.NODE_PORT_RANGE, help="NodePort range (default %(default)s)")
    p.add_argument("--node-name", default="", help="the node this api-server runs beside (shown by `skiff version`)")
    p.add_argument("--watch-cache-size", type=int, default=4096,
                   help="recent events kept per resource for watches to resume from (default %(default)s)")
    p.add_argument("--watch-buffer", type=int, default=4096,
                   help="events queued for one watcher before it is closed as too slow (default %(default)s)")
    p.add_argument("--watch-buffer-bytes", type=int, default=Options.watcher_buffer_bytes,
                   help="bytes of encoded events queued for one watcher before it is closed as too slow "
                        "(default %(default)s)")
    p.add_argument("--max-requests-inflight", type=int, default=Limits.max_requests_inflight,
                   help="read-only requests served at once; more are refused with RESOURCE_EXHAUSTED (HTTP 429) "
                        "and a retry hint; 0: unlimited (default %(default)s)")
    p.add_argument("--max-mutating-requests-inflight", type=int, default=Limits.max_mutating_requests_inflight,
                   help="mutating requests served at once, as --max-requests-inflight (default %(default)s)")
    p.add_argument("--max-watches-per-client", type=int, default=Limits.max_watches_per_client,
                   help="watches one user at one host address may hold open; 0: unlimited (default %(default)s)")
    p.add_argument("--bookmark-interval", type=duration, default=5.0,
                   help="time between watch bookmarks (default 5s)")
    p.add_argument("--compaction-interval", type=duration, default=300.0,
                   help="time between store compactions, which only the api-server does; 0 disables (default 5m)")
    p.add_argument("--event-ttl", type=duration, default=3600.0, help="how long an Event is kept (default 1h)")
    p.add_argument("--default-not-ready-toleration-seconds", type=int, default=DEFAULT_TOLERATION_SECONDS,
                   help="tolerationSeconds of the not-ready:NoExecute toleration added to every pod that has "
                        "none (default %(default)s)")
    p.add_argument("--default-unreachable-toleration-seconds", type=int, default=DEFAULT_TOLERATION_SECONDS,
                   help="tolerationSeconds of the unreachable:NoExecute toleration added to every pod that has "
                        "none (default %(default)s)")
    add_verbose_flag(p)
    return p


def host_networks() -> list[tuple[str, str]]:
    """This host's IPv4 networks, [("host network on eth0", "10.78.0.10/24")]; [] when `ip` cannot tell."""
    try:
        out = subprocess.run(["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True, check=True,
                             timeout=10).stdout
        links = json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        log.warning("cannot list this host's addresses (%s); not checking --service-cidr against them", exc)
        return []
    return [(f"host network on {link.get('ifname', '?')}", f"{a['local']}/{a['prefixlen']}")
            for link in links for a in link.get("addr_info", []) if "local" in a and "prefixlen" in a]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        parse_cidr(args.service_cidr)
        parse_port_range(args.node_port_range)
        defaults.check_disjoint([("service CIDR (--service-cidr)", args.service_cidr)], host_networks())
    except ValueError as exc:
        print(f"skiff-apiserver: {exc}", file=sys.stderr)
        return 2
    for name in ("default_not_ready_toleration_seconds", "default_unreachable_toleration_seconds"):
        if getattr(args, name) < 0:
            print(f"skiff-apiserver: --{name.replace('_', '-')} must not be negative", file=sys.stderr)
            return 2
    for name in ("watch_cache_size", "watch_buffer", "watch_buffer_bytes"):
        if getattr(args, name) < 1:
            print(f"skiff-apiserver: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    for name in ("max_requests_inflight", "max_mutating_requests_inflight", "max_watches_per_client"):
        if getattr(args, name) < 0:
            print(f"skiff-apiserver: --{name.replace('_', '-')} must not be negative", file=sys.stderr)
            return 2
    config = Config(store_endpoints=args.store_endpoints, listen=args.listen, service_cidr=args.service_cidr,
                    http_listen=args.http_listen, node_port_range=args.node_port_range, node_name=args.node_name,
                    limits=Limits(max_requests_inflight=args.max_requests_inflight,
                                  max_mutating_requests_inflight=args.max_mutating_requests_inflight,
                                  max_watches_per_client=args.max_watches_per_client),
                    options=Options(watch_cache_size=args.watch_cache_size, watcher_buffer=args.watch_buffer,
                                    watcher_buffer_bytes=args.watch_buffer_bytes,
                                    bookmark_interval=args.bookmark_interval,
                                    event_ttl=round(args.event_ttl),
                                    compaction_interval=args.compaction_interval,
                                    default_not_ready_toleration_seconds=args.default_not_ready_toleration_seconds,
                                    default_unreachable_toleration_seconds=(
                                        args.default_unreachable_toleration_seconds)))
    try:
        asyncio.run(serve(config))
    except (StartupError, FatalError) as exc:
        print(f"skiff-apiserver: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m controlplane.apiserver` / `skiff-apiserver`: run one api-server process."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from controlplane.apiserver.allocator import parse_cidr, parse_port_range
from controlplane.apiserver.registry import Options
from controlplane.apiserver.server import Config, StartupError, serve

log = logging.getLogger("skiff.apiserver")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skiff-apiserver", description="The Skiff api-server.")
    p.add_argument("--store-endpoints", default="127.0.0.1:2379",
                   help="etcd v3 endpoints (the Skiff store or etcd), comma-separated (default %(default)s)")
    p.add_argument("--listen", default="127.0.0.1:6443", help="address:port to serve gRPC on (default %(default)s)")
    p.add_argument("--service-cidr", default="10.96.0.0/12", help="ClusterIP range (default %(default)s)")
    p.add_argument("--node-port-range", default="30000-32767", help="NodePort range (default %(default)s)")
    p.add_argument("--node-name", default="", help="the node this api-server runs beside (shown by `skiff version`)")
    p.add_argument("--watch-cache-size", type=int, default=4096,
                   help="recent events kept per resource for watches to resume from (default %(default)s)")
    p.add_argument("--watch-buffer", type=int, default=4096,
                   help="events queued for one watcher before it is closed as too slow (default %(default)s)")
    p.add_argument("--bookmark-interval", type=float, default=5.0,
                   help="seconds between watch bookmarks (default %(default)s)")
    p.add_argument("--compaction-interval", type=float, default=300.0,
                   help="seconds between store compactions; 0 disables (default %(default)s)")
    p.add_argument("--event-ttl", type=int, default=3600, help="seconds an Event is kept (default %(default)s)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        parse_cidr(args.service_cidr)
        parse_port_range(args.node_port_range)
    except ValueError as exc:
        print(f"skiff-apiserver: {exc}", file=sys.stderr)
        return 2
    for name in ("watch_cache_size", "watch_buffer"):
        if getattr(args, name) < 1:
            print(f"skiff-apiserver: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    config = Config(store_endpoints=args.store_endpoints, listen=args.listen, service_cidr=args.service_cidr,
                    node_port_range=args.node_port_range, node_name=args.node_name,
                    options=Options(watch_cache_size=args.watch_cache_size, watcher_buffer=args.watch_buffer,
                                    bookmark_interval=args.bookmark_interval, event_ttl=args.event_ttl,
                                    compaction_interval=args.compaction_interval))
    try:
        asyncio.run(serve(config))
    except StartupError as exc:
        print(f"skiff-apiserver: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

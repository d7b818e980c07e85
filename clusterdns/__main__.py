"""`python -m clusterdns` / `skiff-clusterdns`: the node-local cluster DNS server.

Every host that runs pods runs one, in the host's network namespace, listening on the same
link-local address (169.254.20.10:53 by default, as Kubernetes' NodeLocal DNSCache does; the
address is added to `lo` as a /32, which makes it local to the host for traffic arriving from
its pods without a dummy interface, which not every kernel has), so a pod's nameserver never
depends on another host being up. It answers the cluster domain from its informer caches and forwards other names to
`--upstreams` (none: SERVFAIL at once).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys

from clusterdns.app import ClusterDns
from clusterdns.server import DnsServer, parse_upstreams
from clusterdns.zone import DEFAULT_TTL, ZoneConfig
from skiff import defaults, tls
from skiff.daemon import add_verbose_flag, run_until_signalled, setup_logging

log = logging.getLogger("clusterdns")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skiff-clusterdns", description="Skiff node-local cluster DNS server.")
    p.add_argument("--api-servers", default=os.environ.get("SKIFF_SERVER", ""),
                   help="api-server endpoints, host:port[,host:port...] (default $SKIFF_SERVER)")
    p.add_argument("--listen", default=f"{defaults.NODE_LOCAL_DNS_IP}:53",
                   help=f"address to serve on, UDP and TCP (default {defaults.NODE_LOCAL_DNS_IP}:53)")
    p.add_argument("--interface", default=defaults.NODE_LOCAL_DNS_INTERFACE,
                   help="interface the listen address is added to (/32) when no interface has it "
                        f"(default {defaults.NODE_LOCAL_DNS_INTERFACE}; empty: never add it)")
    p.add_argument("--cluster-domain", default=defaults.CLUSTER_DOMAIN)
    p.add_argument("--reverse-cidrs", default="",
                   help="CIDRs whose PTR names are answered here (service and cluster CIDR), comma-separated")
    p.add_argument("--upstreams", default="", help="resolvers for other names, ip[:port][,...]; "
                   "none: such names are SERVFAIL at once")
    p.add_argument("--ttl", type=int, default=DEFAULT_TTL, help=f"TTL of answers (default {DEFAULT_TTL}s)")
    tls.add_daemon_client_flags(p)
    add_verbose_flag(p)
    return p


def split_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit(f"--listen: expected ip:port, got {text!r}")
    ipaddress.IPv4Address(host)
    return host, int(port)


def ensure_address(ip: str, interface: str) -> None:
    """Put `ip`/32 on `interface` unless some interface of this netns already has it."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        if any(a.get_attr("IFA_ADDRESS") == ip for a in ipr.get_addr(family=2)):
            return
        links = ipr.link_lookup(ifname=interface)
        if not links:
            raise SystemExit(f"--interface {interface}: no such interface")
        ipr.addr("add", index=links[0], address=ip, prefixlen=32)
        ipr.link("set", index=links[0], state="up")
    log.info("address %s/32 added on %s", ip, interface)


async def run(args: argparse.Namespace) -> int:
    from skiff.client import Client

    host, port = split_listen(args.listen)
    config = ZoneConfig(domain=args.cluster_domain, ttl=args.ttl,
                        reverse_cidrs=tuple(c.strip() for c in args.reverse_cidrs.split(",") if c.strip()))
    server = DnsServer(config, upstreams=parse_upstreams(args.upstreams))
    if not args.api_servers:
        raise SystemExit("--api-servers is required (or set SKIFF_SERVER)")
    client = Client(args.api_servers, credentials=tls.daemon_credentials(args, "clusterdns"))
    app = ClusterDns(client, server)
    await server.start(host, port)
    try:
        await app.run()
    finally:
        await server.close()
        await client.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    host, _ = split_listen(args.listen)
    if args.interface and not ipaddress.IPv4Address(host).is_loopback and host != "0.0.0.0":
        # Before the event loop: pyroute2's synchronous IPRoute runs a loop of its own.
        ensure_address(host, args.interface)
    return run_until_signalled(run(args))


if __name__ == "__main__":
    sys.exit(main())

"""`python -m netproxy` / `skiff-netproxy`: run the network proxy on this node, or clean up after it.

Run it inside the node's network namespace (on a real host that is the host). It never
removes its rules on exit, so Services keep working while it restarts; `--cleanup` removes
everything it installed, in both modes and both iptables backends, and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import sys
from pathlib import Path

from netproxy.config import ProxyConfig
from netproxy.iptables import cleanup as iptables_cleanup
from netproxy.iptables.command import BACKENDS, IptablesCmd, detect_backend
from netproxy.iptables.proxier import IptablesProxier
from netproxy.iptables.writer import NFT_MAX_CHAINS
from netproxy.ipvs.kernel import PyrouteIpvs, ipvs_available
from netproxy.ipvs.proxier import IpvsProxier
from netproxy.metrics import Metrics, serve
from netproxy.netpol.enforcer import cleanup as netpol_cleanup
from netproxy.proxier import Proxier
from skiff import defaults, tls
from skiff.daemon import add_verbose_flag, duration, run_until_signalled, setup_logging
from skiff.errors import InvalidError, SkiffError

log = logging.getLogger("netproxy")

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skiff-netproxy", description="Skiff network proxy (Services -> iptables/IPVS).")
    p.add_argument("--api-servers", default=os.environ.get("SKIFF_SERVER", ""),
                   help="api-server endpoints, host:port[,host:port...] (default $SKIFF_SERVER)")
    p.add_argument("--node-name", default=socket.gethostname(), help="this node's name (default: hostname)")
    p.add_argument("--mode", choices=("iptables", "ipvs"), default="iptables")
    p.add_argument("--cluster-cidr", default="", help="pod CIDR of the cluster, e.g. 10.244.0.0/16: ClusterIP "
                   "traffic from outside it is masqueraded")
    p.add_argument("--min-sync-period", type=duration, default=1.0,
                   help="least time between syncs; changes in between are merged (default 1s; 0 allowed)")
    p.add_argument("--sync-period", type=duration, default=30.0,
                   help="a full resync runs at least this often (default 30s; 0: never)")
    p.add_argument("--iptables-backend", choices=("auto", *BACKENDS), default="auto",
                   help="iptables-nft or iptables-legacy; auto picks the one already in use")
    p.add_argument("--ipvs-scheduler", default="rr", help="IPVS scheduler (rr, lc, sh, ...; default rr)")
    p.add_argument("--nodeport-addresses", default="",
                   help="comma-separated CIDRs whose local addresses serve NodePorts (default: all but 127/8)")
    p.add_argument("--masquerade-all", action="store_true", help="masquerade every ClusterIP connection")
    p.add_argument("--metrics-bind-address", default=f"127.0.0.1:{defaults.PROXY_METRICS_PORT}",
                   help="host:port serving /metrics and /healthz; empty disables")
    p.add_argument("--network-policy", choices=("on", "off"), default="on",
                   help="enforce NetworkPolicies on this node's pods with iptables (default on)")
    p.add_argument("--cleanup", action="store_true", help="remove everything netproxy installed, then exit")
    tls.add_daemon_client_flags(p)
    add_verbose_flag(p)
    return p


def config_from(args: argparse.Namespace) -> ProxyConfig:
    return ProxyConfig(cluster_cidr=args.cluster_cidr,
                       nodeport_addresses=tuple(c.strip() for c in args.nodeport_addresses.split(",") if c.strip()),
                       masquerade_all=args.masquerade_all, ipvs_scheduler=args.ipvs_scheduler)


def _legacy_in_use() -> bool:
    try:
        return bool(Path("/proc/net/ip_tables_names").read_text().split())
    except OSError:
        return False


async def cleanup_all() -> int:
    """Remove netproxy's IPVS state and its rules from every iptables backend present."""
    # In a thread: pyroute2's synchronous sockets cannot be opened inside a running event loop.
    ok, why = await asyncio.to_thread(ipvs_available)
    if ok:
        kernel = PyrouteIpvs()
        try:
            removed = kernel.cleanup()
            print(f"ipvs: removed {removed} virtual servers and kube-ipvs0")
        finally:
            kernel.close()
    else:
        print(f"ipvs: nothing to do ({why})")
    for backend in BACKENDS:
        if backend == "legacy" and not _legacy_in_use():
            continue
        ipt = IptablesCmd(backend)
        chains = await iptables_cleanup.cleanup(ipt, max_chains=NFT_MAX_CHAINS if backend == "nft" else None)
        chains += await netpol_cleanup(ipt)
        print(f"iptables-{backend}: removed {chains} chains")
    return 0


def _bridge_nf_warning() -> None:
    try:
        value = Path("/proc/sys/net/bridge/bridge-nf-call-iptables").read_text().strip()
    except OSError:
        log.warning("br_netfilter is not loaded: a pod reaching a ClusterIP whose endpoint is on the same "
                    "bridge will fail (modprobe br_netfilter)")
        return
    if value != "1":
        log.warning("net.bridge.bridge-nf-call-iptables=%s: same-node pod -> ClusterIP traffic will fail", value)


async def run(args: argparse.Namespace) -> int:
    from netproxy.app import NetProxy
    from skiff.client import Client

    config = config_from(args)
    backend = args.iptables_backend if args.iptables_backend != "auto" else detect_backend()
    ipt = IptablesCmd(backend)
    proxier: Proxier
    if args.mode == "ipvs":
        ok, why = await asyncio.to_thread(ipvs_available)  # in a thread: see cleanup_all
        if not ok:
            raise InvalidError(f"--mode ipvs: {why}; use --mode iptables")
        kernel = PyrouteIpvs()
        kernel.set_sysctls()
        proxier = IpvsProxier(kernel, ipt, config)
    else:
        proxier = IptablesProxier(ipt, config)
    _bridge_nf_warning()
    if not args.api_servers:
        raise InvalidError("--api-servers is required (or set SKIFF_SERVER)")
    client = Client(args.api_servers, credentials=tls.daemon_credentials(args, "netproxy"))
    metrics = Metrics(mode=args.mode)
    metrics.info.set(1, mode=args.mode, backend=backend)
    server = None
    if args.metrics_bind_address:
        host, _, port = args.metrics_bind_address.rpartition(":")
        server = await serve(metrics, host or "127.0.0.1", int(port),
                             healthz_max_age=max(120.0, 2 * args.sync_period))
        log.info("metrics on http://%s/metrics", args.metrics_bind_address)
    proxy = NetProxy(client, proxier, node_name=args.node_name, min_sync_period=args.min_sync_period,
                     sync_period=args.sync_period, metrics=metrics,
                     netpol=ipt if args.network_policy == "on" else None)
    log.info("netproxy starting: mode %s, iptables-%s, node %s, cluster CIDR %s, min sync period %gs, "
             "network policy %s", args.mode, backend, args.node_name, config.cluster_cidr or "(none)",
             args.min_sync_period, args.network_policy)
    try:
        await proxy.run()
    except asyncio.CancelledError:
        log.info("netproxy stopping (rules stay in place)")
        raise
    finally:
        if server is not None:
            server.close()
        await client.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        if args.cleanup:
            return asyncio.run(cleanup_all())
        config_from(args)  # bad flags fail before anything is touched
        return run_until_signalled(run(args))
    except SkiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())

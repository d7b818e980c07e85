"""`python -m controlplane.apiserver` / `skiff-apiserver`: run one api-server process.

TLS flags as kube-apiserver spells them: `--tls-cert-file`/`--tls-private-key-file`/
`--client-ca-file` for what it serves (gRPC and the REST API), `--etcd-cafile`/`--etcd-certfile`/
`--etcd-keyfile` towards the store, `--kubelet-client-certificate`/`--kubelet-client-key`/
`--kubelet-certificate-authority` towards node agents; `--insecure` instead runs it plaintext
with everyone the admin (development only, loudly logged).

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
from controlplane.apiserver.audit import DEFAULT_MAX_BACKUPS, DEFAULT_MAX_SIZE_MB
from controlplane.apiserver.authorizer import DEFAULT_MODES, parse_modes
from controlplane.apiserver.defaults import DEFAULT_TOLERATION_SECONDS
from controlplane.apiserver.limits import Limits
from controlplane.apiserver.registry import Options
from controlplane.apiserver.server import Config, FatalError, StartupError, serve
from skiff import defaults, tls
from skiff.daemon import add_verbose_flag, duration, setup_logging
from skiff.metrics import add_metrics_flag

log = logging.getLogger("skiff.apiserver")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skiff-apiserver", description="The Skiff api-server.")
    p.add_argument("--store-endpoints", default=f"127.0.0.1:{defaults.STORE_CLIENT_PORT}",
                   help="etcd v3 endpoints (the Skiff store or etcd), comma-separated (default %(default)s)")
    p.add_argument("--listen", default=f"127.0.0.1:{defaults.API_PORT}",
                   help="address:port to serve gRPC on (default %(default)s)")
    p.add_argument("--http-listen", default="",
                   help="address:port to serve the Kubernetes REST API on, HTTPS (empty: not served; "
                        f"{defaults.KUBE_API_PORT} is the usual port)")
    p.add_argument("--service-cidr", default=defaults.SERVICE_CIDR, help="ClusterIP range (default %(default)s)")
    p.add_argument("--node-port-range", default=defaults.NODE_PORT_RANGE, help="NodePort range (default %(default)s)")
    p.add_argument("--node-name", default="", help="the node this api-server runs beside (shown by `skiff version`)")
    p.add_argument("--watch-cache-size", type=int, default=4096,
                   help="recent events kept per resource for watches to resume from (default %(default)s)")
    p.add_argument("--watch-cache-bytes", type=int, default=Options.watch_cache_bytes,
                   help="bytes of stored values those events may refer to, per resource (default %(default)s)")
    p.add_argument("--watch-buffer", type=int, default=4096,
                   help="events queued for one watcher before it is closed as too slow (default %(default)s)")
    p.add_argument("--watch-buffer-bytes", type=int, default=Options.watcher_buffer_bytes,
                   help="bytes of encoded events queued for one watcher before it is closed as too slow "
                        "(default %(default)s)")
    p.add_argument("--watch-max-lag", type=float, default=Options.watcher_max_lag,
                   help="seconds an event may wait for a watcher's client to take it before the watch is closed "
                        "as too slow; 0: no bound (default %(default)s)")
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
    p.add_argument("--authorization-mode", default=",".join(DEFAULT_MODES),
                   help="authorizers, tried in order: AlwaysAllow (development only), AlwaysDeny, Node, RBAC "
                        "(default %(default)s)")
    p.add_argument("--audit-log-path", default="",
                   help="write one JSON line per mutating request to this file (empty: no audit log)")
    p.add_argument("--audit-log-maxsize", type=float, default=DEFAULT_MAX_SIZE_MB,
                   help="rotate the audit log at this size, in megabytes (default %(default)s)")
    p.add_argument("--audit-log-maxbackup", type=int, default=DEFAULT_MAX_BACKUPS,
                   help="rotated audit log files to keep (default %(default)s)")
    tls.add_server_flags(p)
    tls.add_insecure_flag(p)
    g = p.add_argument_group("store and node agent client TLS")
    g.add_argument("--etcd-cafile", default="",
                   help="CA the store's certificates chain to (its members' or an external etcd's)")
    g.add_argument("--etcd-certfile", default="", help="client certificate towards the store")
    g.add_argument("--etcd-keyfile", default="", help="its key")
    g.add_argument("--kubelet-client-certificate", default="", help="client certificate towards node agents")
    g.add_argument("--kubelet-client-key", default="", help="its key")
    g.add_argument("--kubelet-certificate-authority", default="", help="CA node agents' certificates chain to")
    add_metrics_flag(p, defaults.APISERVER_METRICS_PORT)
    g = p.add_argument_group("service-account tokens (kube-apiserver's flags)")
    g.add_argument("--service-account-key-file", default="",
                   help="PEM RSA public key(s), comma-separated, that verify service-account tokens")
    g.add_argument("--service-account-signing-key-file", default="",
                   help="PEM RSA private key that signs the tokens this api-server issues (TokenRequest)")
    g.add_argument("--service-account-issuer", default=tls.SERVICE_ACCOUNT_ISSUER,
                   help="the tokens' `iss`, also the audience they are for (default %(default)s)")
    add_verbose_flag(p)
    return p


def tls_config(args: argparse.Namespace) -> tuple[tls.ServerTLS | None, tls.Credentials | None,
                                                   tls.Credentials | None]:
    """(serving TLS, store credentials, node agent credentials); with --insecure the api-server
    serves plaintext and reaches the agents so, but still reaches a store with the --etcd-* files
    given (an external etcd with TLS)."""
    etcd = [args.etcd_cafile, args.etcd_certfile, args.etcd_keyfile]
    if any(etcd) and not all(etcd):
        raise tls.TLSConfigError("give all of --etcd-cafile, --etcd-certfile and --etcd-keyfile, or none")
    if args.insecure:
        return None, tls.Credentials(*etcd) if all(etcd) else None, None
    serving = tls.server_tls(args, require_client_cert=False)
    if not args.client_ca_file:
        raise tls.TLSConfigError("--client-ca-file is required: clients authenticate with certificates")
    for flag in ("kubelet_client_certificate", "kubelet_client_key", "kubelet_certificate_authority"):
        if not getattr(args, flag):
            raise tls.TLSConfigError(f"--{flag.replace('_', '-')} is required (or --insecure for development)")
    store = tls.Credentials(*etcd) if all(etcd) else None
    if store is None:
        # As kube-apiserver with an http:// etcd: allowed (an external etcd on loopback), but said.
        log.warning("no --etcd-* flags: the connection to the store %s is PLAINTEXT", args.store_endpoints)
    return (serving, store,
            tls.Credentials(args.kubelet_certificate_authority, args.kubelet_client_certificate,
                            args.kubelet_client_key))


def service_account_keys(args: argparse.Namespace) -> tls.ServiceAccountKeys | None:
    """The service-account token keys from the flags; None without any (no tokens)."""
    if not args.service_account_key_file and not args.service_account_signing_key_file:
        return None
    return tls.ServiceAccountKeys(args.service_account_signing_key_file, args.service_account_key_file,
                                  args.service_account_issuer)


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
        modes = parse_modes(args.authorization_mode)
        if args.audit_log_maxsize <= 0 or args.audit_log_maxbackup < 0:
            raise ValueError("--audit-log-maxsize must be positive and --audit-log-maxbackup not negative")
    except ValueError as exc:
        print(f"skiff-apiserver: {exc}", file=sys.stderr)
        return 2
    try:
        serving, store_credentials, kubelet_credentials = tls_config(args)
    except tls.TLSConfigError as exc:
        print(f"skiff-apiserver: {exc}", file=sys.stderr)
        return 2
    for name in ("default_not_ready_toleration_seconds", "default_unreachable_toleration_seconds"):
        if getattr(args, name) < 0:
            print(f"skiff-apiserver: --{name.replace('_', '-')} must not be negative", file=sys.stderr)
            return 2
    for name in ("watch_cache_size", "watch_cache_bytes", "watch_buffer", "watch_buffer_bytes"):
        if getattr(args, name) < 1:
            print(f"skiff-apiserver: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    for name in ("watch_max_lag", "max_requests_inflight", "max_mutating_requests_inflight", "max_watches_per_client"):
        if getattr(args, name) < 0:
            print(f"skiff-apiserver: --{name.replace('_', '-')} must not be negative", file=sys.stderr)
            return 2
    config = Config(store_endpoints=args.store_endpoints, listen=args.listen, service_cidr=args.service_cidr,
                    http_listen=args.http_listen, metrics_listen=args.metrics_bind_address,
                    node_port_range=args.node_port_range, node_name=args.node_name,
                    authorization_modes=modes, audit_log_path=args.audit_log_path,
                    audit_log_max_size_mb=args.audit_log_maxsize, audit_log_max_backups=args.audit_log_maxbackup,
                    tls=serving, store_credentials=store_credentials, kubelet_credentials=kubelet_credentials,
                    limits=Limits(max_requests_inflight=args.max_requests_inflight,
                                  max_mutating_requests_inflight=args.max_mutating_requests_inflight,
                                  max_watches_per_client=args.max_watches_per_client),
                    service_account=service_account_keys(args),
                    options=Options(watch_cache_size=args.watch_cache_size,
                                    watch_cache_bytes=args.watch_cache_bytes, watcher_buffer=args.watch_buffer,
                                    watcher_buffer_bytes=args.watch_buffer_bytes, watcher_max_lag=args.watch_max_lag,
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

"""`skiff-store` / `python -m controlplane.store`: run one member of the Raft-replicated store.

    python -m controlplane.store --name s1 --data-dir /var/lib/skiff/s1 \\
        --listen-client 127.0.0.1:2379 --listen-peer 127.0.0.1:2380 \\
        --initial-cluster s1=127.0.0.1:2380,s2=127.0.0.1:2382,s3=127.0.0.1:2384 \\
        --password-file /etc/skiff/store-password

Peer traffic is pickled Python, so a cluster password (pysyncobj's encryption) is required:
--password-file or SKIFF_STORE_PASSWORD; --insecure-no-password is refused unless the
environment says it is a test ($SKIFF_TEST_MODE=1). The client port is mutual TLS, with etcd's
flags (`--cert-file --key-file --trusted-ca-file --client-cert-auth`; controlplane/store/auth.py
says who may do what); `--insecure` serves it plaintext (development only, loudly logged).
Neither port listens on every interface (0.0.0.0): give the control-plane address.

Startup fails fast with a clear message on a busy port, a data dir that belongs to another
member or cluster, a data dir already in use, or a journal or snapshot that fails its
checksum (file and offset named; see `skiff-store-repair`); unreachable peers are retried and
logged once per change.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import logging
import os
import signal
import socket
import sys

from prometheus_client import REGISTRY

from controlplane.store.disk import CorruptData
from controlplane.store.metrics import StoreCollector
from controlplane.store.raft import RaftTimings
from controlplane.store.server import Store, StoreConfig, prepare_data_dir, url_to_addr
from skiff import defaults, eventloop, metrics, tls
from skiff.daemon import add_verbose_flag, duration, setup_logging
from skiff.metrics import add_metrics_flag

# Set by tests: allows --insecure-no-password.
TEST_MODE_ENV = "SKIFF_TEST_MODE"

log = logging.getLogger("skiff.store")


def parse_initial_cluster(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, url = part.partition("=")
        if not sep or not name or not url:
            raise ValueError(f"--initial-cluster: expected name=host:port, got {part!r}")
        addr = url_to_addr(url)
        host, _, port = addr.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--initial-cluster: {name}: expected host:port, got {url!r}")
        if name in out:
            raise ValueError(f"--initial-cluster: member {name!r} listed twice")
        out[name] = addr
    if not out:
        raise ValueError("--initial-cluster is empty")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skiff-store", description="Run one member of the Skiff store (etcd v3 API).")
    p.add_argument("--name", required=True, help="this member's name, as in --initial-cluster")
    p.add_argument("--data-dir", required=True, help="journal, snapshots and member identity")
    p.add_argument("--listen-client", required=True, help="host:port for the etcd v3 gRPC API")
    p.add_argument("--listen-peer", required=True, help="host:port for Raft traffic")
    p.add_argument("--initial-cluster", required=True, help="name=host:port,... of every member")
    p.add_argument("--initial-cluster-state", choices=("new", "existing"), default="new",
                   help="'existing' to join a cluster after `etcdctl member add`")
    p.add_argument("--initial-cluster-token", default="skiff-store", help="tells clusters with the same members apart")
    p.add_argument("--quota-backend-bytes", type=int, default=StoreConfig.quota_bytes,
                   help="raise the NOSPACE alarm when live data + history would exceed this "
                        "(default 2 GiB, as etcd; 0: no quota)")
    p.add_argument("--disk-reserve-bytes", type=int, default=StoreConfig.disk_reserve_bytes,
                   help="raise the NOSPACE alarm when the data dir's filesystem has less free space (default 64 MiB)")
    p.add_argument("--max-pending-requests", type=int, default=StoreConfig.max_pending,
                   help="requests waiting for the log beyond which clients get 'too many requests' (default 5000)")
    p.add_argument("--password-file", help="file holding the cluster password (else $SKIFF_STORE_PASSWORD)")
    p.add_argument("--insecure-no-password", action="store_true",
                   help="run without peer encryption: tests on a private loopback only")
    p.add_argument("--request-timeout", type=duration, default=5.0, help="time before UNAVAILABLE (default 5s)")
    p.add_argument("--auto-compaction-revisions", type=int, default=0,
                   help="keep this many revisions of history (default 0: off, as in etcd; the api-server "
                   "compacts)")
    p.add_argument("--auto-compaction-seconds", type=duration, default=0.0,
                   help="keep this much time of history, e.g. 1h (default 0: off)")
    p.add_argument("--progress-notify-interval", type=duration, default=600.0,
                   help="time between watch progress notifications (default 10m, etcd's)")
    p.add_argument("--snapshot-count", type=int, default=20000, help="log entries between snapshots")
    p.add_argument("--heartbeat-interval", type=duration, default=0.1,
                   help="time between the leader's heartbeats (etcd's flag, with a unit: default 100ms)")
    p.add_argument("--election-timeout", type=duration, default=0.8,
                   help="minimum time without a leader before an election (max is twice this; etcd's flag, "
                   "with a unit: default 800ms); raise both on a slow or loaded machine")
    g = p.add_argument_group("client TLS (etcd's flags)")
    g.add_argument("--cert-file", default="", help="this member's serving certificate")
    g.add_argument("--key-file", default="", help="its key")
    g.add_argument("--trusted-ca-file", default="", help="CA client certificates must chain to")
    g.add_argument("--client-cert-auth", action="store_true", help="require client certificates (always on with TLS)")
    tls.add_insecure_flag(p)
    add_metrics_flag(p, defaults.STORE_METRICS_PORT)
    add_verbose_flag(p)
    return p


def store_tls(args: argparse.Namespace) -> tls.ServerTLS | None:
    if args.insecure:
        return None
    if not (args.cert_file and args.key_file and args.trusted_ca_file):
        raise SystemExit("TLS is required on the client port: give --cert-file, --key-file and --trusted-ca-file "
                         "(with --client-cert-auth), or --insecure for development")
    return tls.ServerTLS(args.cert_file, args.key_file, args.trusted_ca_file, require_client_cert=True)


def check_not_wildcard(addr: str, flag: str) -> None:
    host = addr.rpartition(":")[0].strip("[]")
    if host in ("", "0.0.0.0", "::"):
        raise SystemExit(f"{flag} {addr}: listen on the control-plane address, not on every interface")


def read_password(args: argparse.Namespace) -> str | None:
    if args.password_file:
        try:
            with open(args.password_file) as f:
                pw = f.read().strip()
        except OSError as e:
            raise SystemExit(f"--password-file: {e}") from None
        if not pw:
            raise SystemExit(f"--password-file {args.password_file} is empty")
        return pw
    pw = os.environ.get("SKIFF_STORE_PASSWORD", "")
    if pw:
        return pw
    if args.insecure_no_password:
        if os.environ.get(TEST_MODE_ENV) != "1":
            raise SystemExit(f"--insecure-no-password is refused outside tests (peers unpickle what they receive); "
                             f"use --password-file (tests set {TEST_MODE_ENV}=1)")
        return None
    raise SystemExit(
        "a cluster password is required (peer traffic is pickled): pass --password-file FILE or set "
        "SKIFF_STORE_PASSWORD; --insecure-no-password is for throwaway tests only")


def check_port_free(addr: str, what: str) -> None:
    host, _, port = addr.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, int(port)))
        except OSError as e:
            raise SystemExit(f"cannot listen for {what} on {addr}: {e.strerror}") from None


def lock_data_dir(data_dir: str) -> int:
    os.makedirs(data_dir, exist_ok=True)
    fd = os.open(os.path.join(data_dir, "LOCK"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip()
        raise SystemExit(f"data dir {data_dir} is in use by another process (pid {owner or '?'})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def config_from_args(args: argparse.Namespace) -> StoreConfig:
    try:
        cluster = parse_initial_cluster(args.initial_cluster)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    peer = url_to_addr(args.listen_peer)
    check_not_wildcard(peer, "--listen-peer")
    check_not_wildcard(url_to_addr(args.listen_client), "--listen-client")
    if cluster.get(args.name) != peer:
        raise SystemExit(f"--initial-cluster must list this member as {args.name}={peer} "
                         f"(it has {args.name}={cluster.get(args.name)})")
    et, hb = args.election_timeout, args.heartbeat_interval
    if not 0 < hb * 5 <= et:
        # etcd's rule too: followers must hear several heartbeats per election timeout, or one
        # late heartbeat starts an election.
        raise SystemExit(f"--election-timeout ({et}s) must be at least 5 times --heartbeat-interval ({hb}s)")
    return StoreConfig(
        name=args.name, data_dir=args.data_dir, listen_client=url_to_addr(args.listen_client),
        listen_peer=peer, initial_cluster=cluster, cluster_state=args.initial_cluster_state,
        cluster_token=args.initial_cluster_token, password=read_password(args),
        request_timeout=args.request_timeout, compaction_revisions=args.auto_compaction_revisions,
        compaction_seconds=args.auto_compaction_seconds, progress_notify_interval=args.progress_notify_interval,
        snapshot_every=args.snapshot_count, quota_bytes=args.quota_backend_bytes,
        disk_reserve_bytes=args.disk_reserve_bytes, max_pending=args.max_pending_requests,
        tls=store_tls(args),
        timings=RaftTimings(heartbeat=hb, election_min=et, election_max=2 * et, leader_fallback=max(3.0, 2 * et),
                            connection_timeout=max(3.5, 2 * et + 0.5)),
    )


async def run(cfg: StoreConfig, *, metrics_bind_address: str = "") -> None:
    check_port_free(cfg.listen_peer, "peers")
    check_port_free(cfg.listen_client, "clients")
    peers = prepare_data_dir(cfg)
    if cfg.listen_peer not in peers:
        peers.append(cfg.listen_peer)
    if cfg.password is None:
        log.warning("running WITHOUT a cluster password: peer traffic is unauthenticated pickle")
    try:
        store = Store(cfg, peers=peers)
    except CorruptData as e:
        raise SystemExit(f"skiff-store: {e}") from None
    try:
        await asyncio.to_thread(store.node.raft.waitBinded)
    except Exception:
        store.node.raft.destroy()
        raise SystemExit(f"cannot listen for peers on {cfg.listen_peer}") from None
    await store.start()
    REGISTRY.register(StoreCollector(store))
    health = metrics.Health(ready={"raft": lambda: "" if store.node.is_ready() and store.node.leader_addr()
                                   else "no leader"})
    served = await metrics.serve(metrics_bind_address, health, what=f"store member {cfg.name} metrics")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    if served is not None:
        await served.close()
    await store.stop()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    # Two busy threads (Raft ticks, the gRPC loop) hand work to each other many times per
    # request; with the default 5 ms GIL switch interval each hand-off can wait that long.
    sys.setswitchinterval(0.0005)
    setup_logging(args.verbose)
    cfg = config_from_args(args)
    if cfg.tls is None:
        tls.warn_insecure("store")
    lock_data_dir(cfg.data_dir)
    # On uvloop: grpc.aio's per-request callbacks and the tick thread's hand-offs cost a
    # quarter less CPU per put than on asyncio's Python loop (docs/store.md, "Throughput").
    eventloop.run(run(cfg, metrics_bind_address=args.metrics_bind_address))


if __name__ == "__main__":
    main()

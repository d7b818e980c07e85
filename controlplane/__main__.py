"""`python -m controlplane` (skiff-controlplane): everything a control-plane host runs, in one command.

It starts, as child processes, a store member (`python -m controlplane.store`), an api-server
beside it (`python -m controlplane.apiserver`), the controller manager and the scheduler, in
that order (each waits until the previous one listens), and supervises them:
- a child that exits is restarted with backoff (1 s doubling to 30 s), as systemd's
  Restart=always would, and the exit is logged with its code;
- SIGTERM/SIGINT stops the children in reverse order (SIGTERM, then SIGKILL after 10 s);
- with --store-endpoints, no store member is started and the api-server uses those
  endpoints (an external etcd, or Skiff store members run elsewhere).
Several hosts each running this form an HA control plane: the store replicates, the
api-servers are independent, and the controllers and schedulers elect one leader each.
The children's command lines come from skiff.daemons, the same definitions deploy/render.py
uses for the lab and systemd units; `-v` is passed on to every child.

TLS: on first start it creates the cluster CA and the control plane's certificates under
--pki-dir (skiff/pki.py; existing ones are reused) and every child uses them; the admin's
credentials are `admin.crt`/`admin.key` there. `--insecure` runs everything plaintext
(development only).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

from skiff import daemons, defaults, pki, tls
from skiff.daemon import add_verbose_flag, run_until_signalled, setup_logging
from skiff.retry import Backoff, Delays

log = logging.getLogger("skiff.controlplane")

# Restarting a child that exited: 1 s doubling to 30 s (as systemd's Restart=always would, but backing off).
RESTART_BACKOFF = Backoff(initial=1.0, max=30.0)

STOP_TIMEOUT = 10.0


@dataclass
class Child:
    name: str
    argv: list[str]
    wait_for: str = ""  # host:port that must accept connections before the next child starts
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skiff-controlplane",
                                description="Run a store member, an api-server, the controllers and the scheduler.")
    store = p.add_argument_group("store member (skipped with --store-endpoints)")
    store.add_argument("--name", default="s1", help="store member name")
    store.add_argument("--data-dir", default="/var/lib/skiff/store", help="store member data directory")
    store.add_argument("--listen-client", default=f"127.0.0.1:{defaults.STORE_CLIENT_PORT}")
    store.add_argument("--listen-peer", default=f"127.0.0.1:{defaults.STORE_PEER_PORT}")
    store.add_argument("--initial-cluster", default="", help="name=host:peerport,... (default: this member alone)")
    store.add_argument("--initial-cluster-token", default="skiff-store")
    store.add_argument("--password-file", default="", help="store cluster password file")
    store.add_argument("--insecure-no-password", action="store_true", help="run the store without a password")
    store.add_argument("--store-endpoints", default="",
                       help="use these store endpoints (e.g. an external etcd) instead of running a member")
    store.add_argument("--etcd-cafile", default="", help="with --store-endpoints: the external store's CA "
                       "(with --etcd-certfile/--etcd-keyfile; none of the three: plaintext to it)")
    store.add_argument("--etcd-certfile", default="", help="client certificate towards the external store")
    store.add_argument("--etcd-keyfile", default="", help="its key")
    api = p.add_argument_group("api-server")
    api.add_argument("--listen", default=f"127.0.0.1:{defaults.API_PORT}", help="api-server address")
    api.add_argument("--http-listen", default=None,
                     help="Kubernetes REST API address (default: --listen's host, port "
                          f"{defaults.KUBE_API_PORT}; empty: not served)")
    api.add_argument("--service-cidr", default=defaults.SERVICE_CIDR)
    api.add_argument("--node-port-range", default=defaults.NODE_PORT_RANGE)
    api.add_argument("--node-name", default=socket.gethostname())
    api.add_argument("--default-not-ready-toleration-seconds", type=int, default=300)
    api.add_argument("--default-unreachable-toleration-seconds", type=int, default=300)
    api.add_argument("--audit-log-path", default="", help="the api-server's audit log (empty: none)")
    cm = p.add_argument_group("controllers and scheduler")
    cm.add_argument("--api-servers", default="",
                    help="api-servers the controllers and scheduler use (default: this host's, from --listen)")
    cm.add_argument("--cluster-cidr", default=defaults.CLUSTER_CIDR)
    cm.add_argument("--node-cidr-mask-size", type=int, default=defaults.NODE_CIDR_MASK_SIZE)
    cm.add_argument("--node-monitor-grace-period", default="40s")
    p.add_argument("--pki-dir", default="/etc/skiff/pki", help="the cluster CA and certificates (created if missing)")
    p.add_argument("--insecure", action="store_true",
                   help="development only: plaintext everywhere, no authentication")
    add_verbose_flag(p)
    return p


def http_listen(args: argparse.Namespace) -> str:
    """--http-listen, by default on --listen's host at the Kubernetes API port (as render gives it)."""
    if args.http_listen is not None:
        return str(args.http_listen)
    return f"{args.listen.rpartition(':')[0]}:{defaults.KUBE_API_PORT}"


def plan_children(args: argparse.Namespace, python: str = sys.executable) -> list[Child]:
    """The children to run, in start order (pure: nothing is started)."""
    children: list[Child] = []
    store_endpoints = args.store_endpoints
    api_tls = None if args.insecure else tls.apiserver_tls(args.pki_dir)
    if api_tls is not None and args.store_endpoints:
        external = (tls.Credentials(args.etcd_cafile, args.etcd_certfile, args.etcd_keyfile) if args.etcd_cafile
                    else None)
        api_tls = dataclasses.replace(api_tls, store=external)

    def creds(name: str) -> tls.Credentials | None:
        return None if args.insecure else tls.Credentials.from_pki(args.pki_dir, name)

    if not store_endpoints:
        # With neither flag, the member reads $SKIFF_STORE_PASSWORD, which it inherits.
        children.append(Child("store", daemons.store(
            python, name=args.name, data_dir=args.data_dir, listen_client=args.listen_client,
            listen_peer=args.listen_peer, initial_cluster=args.initial_cluster or f"{args.name}={args.listen_peer}",
            initial_cluster_token=args.initial_cluster_token, password_file=args.password_file,
            insecure_no_password=args.insecure_no_password,
            tls=None if args.insecure else tls.store_tls(args.pki_dir, args.name),
            verbose=args.verbose), wait_for=args.listen_client))
        store_endpoints = args.listen_client
    children.append(Child("apiserver", daemons.apiserver(
        python, store_endpoints=store_endpoints, listen=args.listen, http_listen=http_listen(args),
        service_cidr=args.service_cidr,
        node_port_range=args.node_port_range, node_name=args.node_name,
        default_not_ready_toleration_seconds=args.default_not_ready_toleration_seconds,
        default_unreachable_toleration_seconds=args.default_unreachable_toleration_seconds,
        audit_log_path=args.audit_log_path, tls=api_tls, verbose=args.verbose), wait_for=args.listen))
    api_servers = args.api_servers or args.listen
    children.append(Child("controllers", daemons.controllers(
        python, api_servers=api_servers, cluster_cidr=args.cluster_cidr, node_cidr_mask_size=args.node_cidr_mask_size,
        node_monitor_grace_period=args.node_monitor_grace_period,
        identity=args.node_name, service_cidr=args.service_cidr, credentials=creds(pki.CONTROLLER_MANAGER),
        cluster_signing_cert_file="" if args.insecure else str(pki.PKIDir(args.pki_dir).ca.cert),
        cluster_signing_key_file="" if args.insecure else str(pki.PKIDir(args.pki_dir).ca.key),
        root_ca_file="" if args.insecure else str(pki.PKIDir(args.pki_dir).ca.cert),
        # default/kubernetes leads to this api-server's REST port (when it is the one and serves one).
        kubernetes_service_endpoints="" if args.api_servers else http_listen(args),
        verbose=args.verbose)))
    children.append(Child("scheduler", daemons.scheduler(python, api_servers=api_servers, identity=args.node_name,
                                                         credentials=creds(pki.SCHEDULER), verbose=args.verbose)))
    return children


async def wait_listening(address: str, *, timeout: float) -> bool:
    host, _, port = address.rpartition(":")
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            _, writer = await asyncio.open_connection(host.strip("[]") or "127.0.0.1", int(port))
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        return True
    return False


class Supervisor:
    def __init__(self, children: list[Child]) -> None:
        self.children = children
        self._stopping = False

    async def _start(self, child: Child) -> None:
        child.proc = await asyncio.create_subprocess_exec(*child.argv, start_new_session=True)
        child.started_at = time.monotonic()
        log.info("started %s (pid %d)", child.name, child.proc.pid)

    async def _keep(self, child: Child) -> None:
        """Restart `child` whenever it exits, with backoff, until we stop."""
        delays = Delays(RESTART_BACKOFF)
        while not self._stopping:
            assert child.proc is not None
            code = await child.proc.wait()
            if self._stopping:
                return
            if time.monotonic() - child.started_at > 60:
                delays.reset()  # it ran fine for a while: start over with a short delay
            delay = delays.next()
            log.error("%s exited with code %s; restarting in %.0fs", child.name, code, delay)
            await asyncio.sleep(delay)
            child.restarts += 1
            await self._start(child)

    async def run(self) -> None:
        keepers = []
        try:
            for child in self.children:
                await self._start(child)
                keepers.append(asyncio.ensure_future(self._keep(child)))
                if child.wait_for and not await wait_listening(child.wait_for, timeout=60):
                    log.warning("%s does not listen on %s after 60s; starting the rest anyway",
                                child.name, child.wait_for)
            await asyncio.gather(*keepers)
        finally:
            self._stopping = True
            for k in keepers:
                k.cancel()
            await self.stop()

    async def stop(self) -> None:
        for child in reversed(self.children):
            proc = child.proc
            if proc is None or proc.returncode is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(STOP_TIMEOUT):
                    await proc.wait()
            except TimeoutError:
                log.warning("%s did not stop in %.0fs; killing it", child.name, STOP_TIMEOUT)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    if (not args.store_endpoints and not args.password_file and not args.insecure_no_password
            and not os.environ.get("SKIFF_STORE_PASSWORD")):
        print("error: the store member needs --password-file (or $SKIFF_STORE_PASSWORD, or "
              "--insecure-no-password for a lab), or use --store-endpoints for an external store", file=sys.stderr)
        return 2
    if args.insecure:
        tls.warn_insecure("control plane")
    else:
        created = pki.PKIDir(args.pki_dir).ensure(pki_specs(args), now=pki.utcnow())
        if created:
            log.info("PKI %s: issued %s", args.pki_dir, ", ".join(created))
    return run_until_signalled(Supervisor(plan_children(args)).run())


def pki_specs(args: argparse.Namespace) -> list[pki.CertSpec]:
    """This host's control-plane certificates: the api-server reached at --listen's and
    --http-listen's hosts and the service CIDR's first address, this store member."""
    import ipaddress

    hosts = {a.rpartition(":")[0].strip("[]") for a in (args.listen, http_listen(args)) if a}
    ips = sorted({h for h in hosts if h and h not in ("0.0.0.0", "::")} |
                 {str(ipaddress.IPv4Network(args.service_cidr, strict=False).network_address + 1)})
    members = [] if args.store_endpoints else [(args.name, args.listen_client.rpartition(":")[0].strip("[]"))]
    return pki.control_plane_specs(apiserver_ips=ips, store_members=members, extra_dns=(args.node_name,))


if __name__ == "__main__":
    sys.exit(main())

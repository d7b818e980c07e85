"""Start a store (etcd today, the Skiff store later) and api-servers as real processes.

For integration tests and benchmarks that need a working control plane on loopback (both
import it, and bench/ may not import tests/, so it lives here):

    from deploy.loopback import control_plane

    with control_plane(tmp_path, apiservers=1) as cp:
        client = Client(cp.apiserver_endpoints)     # "127.0.0.1:PORT,..."
        ...

Everything listens on free ports of 127.0.0.1, keeps its data and logs under the given
directory, and is stopped (SIGTERM, then SIGKILL) when the block ends, even on failure; if
the test process itself is killed, its children get SIGTERM too (PR_SET_PDEATHSIG, through
setpriv: start processes from the thread that lives longest, normally the main thread).
A process that dies during startup raises StartupError with the tail of its log.
Single pieces: `start_etcd(dir, members=3)`, `start_apiserver(dir, store_endpoints)`;
`Process.kill()` / `.restart()` for failure tests.

The api-servers run `--insecure` (plaintext, everyone the admin) unless `control_plane(...,
pki_dir=DIR)` asks for TLS: then a cluster CA and certificates are created under DIR, the
api-servers serve TLS, and `cp.admin` holds the admin's credentials for clients.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from skiff import daemons, pki, tls
from skiff.tls import Credentials

ROOT = Path(__file__).resolve().parents[1]
ETCD = shutil.which("etcd") or "/usr/bin/etcd"


class StartupError(RuntimeError):
    pass


SETPRIV = shutil.which("setpriv")


def _dying_with_parent(argv: list[str]) -> list[str]:
    """argv run so that it gets SIGTERM when the thread that started it dies (even by SIGKILL):
    a killed test run leaves no store or api-server behind. setpriv (util-linux) sets
    PR_SET_PDEATHSIG and execs; no Python runs between fork and exec (gRPC threads are about)."""
    return [SETPRIV, "--pdeathsig", "TERM", "--", *argv] if SETPRIV else argv


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, *, timeout: float, proc: Process | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.popen is not None and proc.popen.poll() is not None:
            raise StartupError(f"{proc.name} exited with {proc.popen.returncode} during startup:\n{proc.log_tail()}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    tail = proc.log_tail() if proc is not None else ""
    raise StartupError(f"nothing listens on {host}:{port} after {timeout:.0f}s\n{tail}")


@dataclass
class Process:
    """One child process with its command line, log file and listening address."""

    name: str
    argv: list[str]
    log_path: Path
    host: str
    port: int
    env: dict[str, str] | None = None
    popen: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    ready: Callable[[Process, float], None] | None = None  # waits until it serves; default: port open

    def start(self, *, timeout: float = 30.0) -> Process:
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(_dying_with_parent(self.argv), stdout=log, stderr=subprocess.STDOUT,
                                      env=self.env, start_new_session=True, cwd=ROOT)
        log.close()
        if self.ready is not None:
            self.ready(self, timeout)
        else:
            wait_port(self.host, self.port, timeout=timeout, proc=self)
        return self

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, *, timeout: float = 10.0) -> None:
        if not self.running:
            return
        assert self.popen is not None
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.running:
            assert self.popen is not None
            self.popen.kill()
            self.popen.wait(10)

    def restart(self, *, timeout: float = 30.0) -> Process:
        self.stop()
        return self.start(timeout=timeout)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid


def wait_etcd(proc: Process, timeout: float) -> None:
    """Wait until the member answers a KV read (it accepts connections before it serves)."""
    import grpc

    from skiffpb.etcd import rpc_pb2, rpc_pb2_grpc

    wait_port(proc.host, proc.port, timeout=timeout, proc=proc)
    end = time.monotonic() + timeout
    with grpc.insecure_channel(proc.endpoint) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)
        while True:
            try:
                kv.Range(rpc_pb2.RangeRequest(key=b"/"), timeout=1.0)
                return
            except grpc.RpcError:
                if not proc.running or time.monotonic() > end:
                    raise StartupError(f"{proc.name} does not serve on {proc.endpoint}:\n{proc.log_tail()}") from None
                time.sleep(0.05)


@dataclass
class EtcdCluster:
    members: list[Process]

    @property
    def endpoints(self) -> str:
        return ",".join(m.endpoint for m in self.members)

    def stop(self) -> None:
        for m in self.members:
            m.stop()


def start_etcd(workdir: Path, *, members: int = 1, name: str = "etcd",
               client_ports: Sequence[int] = ()) -> EtcdCluster:
    """An etcd cluster of `members` on loopback; data under workdir/NAMEi.data, logs in NAMEi.log."""
    if not os.path.exists(ETCD):
        raise StartupError("etcd is not installed (Debian package etcd-server)")
    host = "127.0.0.1"
    ports = list(client_ports) or [free_port() for _ in range(members)]
    peers = [(f"{name}{i}", ports[i], free_port()) for i in range(members)]
    initial = ",".join(f"{n}=http://{host}:{peer}" for n, _, peer in peers)
    token = f"skiff-test-{secrets.token_hex(4)}"
    procs: list[Process] = []
    for n, client, peer in peers:
        data = workdir / f"{n}.data"
        argv = [ETCD, "--name", n, "--data-dir", str(data),
                "--listen-client-urls", f"http://{host}:{client}", "--advertise-client-urls", f"http://{host}:{client}",
                "--listen-peer-urls", f"http://{host}:{peer}", "--initial-advertise-peer-urls", f"http://{host}:{peer}",
                "--initial-cluster", initial, "--initial-cluster-state", "new", "--initial-cluster-token", token,
                "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn",
                # Idle watches hear the current revision every second (bookmarks stay fresh).
                "--experimental-watch-progress-notify-interval", "1s"]
        procs.append(Process(n, argv, workdir / f"{n}.log", host, client, ready=wait_etcd))
    cluster = EtcdCluster(procs)
    try:
        # Members of a new cluster wait for each other: start all before waiting on any.
        for p in procs:
            log = p.log_path.open("ab")
            p.popen = subprocess.Popen(_dying_with_parent(p.argv), stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
            log.close()
        for p in procs:
            wait_etcd(p, 30.0)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def apiserver_argv(store_endpoints: str, port: int, *, extra: Sequence[str] = ()) -> list[str]:
    """An api-server on loopback; `--insecure` (plaintext, everyone the admin) unless `extra`
    brings TLS flags (`--tls-cert-file`)."""
    tls = [] if "--tls-cert-file" in extra else ["--insecure"]
    return [sys.executable, "-m", "controlplane.apiserver", "--store-endpoints", store_endpoints,
            "--listen", f"127.0.0.1:{port}", *tls, *extra]


def wait_serving(proc: Process, timeout: float, *, credentials: Credentials | None = None) -> None:
    """Wait until the api-server answers Version (it listens only once its caches are filled)."""
    import grpc

    from skiffpb.api.v1 import apiserver_pb2, apiserver_pb2_grpc

    end = time.monotonic() + timeout
    channel_of = (grpc.insecure_channel(proc.endpoint) if credentials is None
                  else grpc.secure_channel(proc.endpoint, credentials.channel_credentials()))
    with channel_of as channel:
        stub = apiserver_pb2_grpc.ApiServerStub(channel)
        while True:
            if not proc.running:
                code = proc.popen.returncode if proc.popen is not None else None
                raise StartupError(f"{proc.name} exited with {code} during startup:\n{proc.log_tail()}")
            try:
                stub.Version(apiserver_pb2.VersionRequest(), timeout=1.0)
                return
            except grpc.RpcError:
                if time.monotonic() > end:
                    raise StartupError(f"{proc.name} not serving on {proc.endpoint} after {timeout:.0f}s:\n"
                                       f"{proc.log_tail()}") from None
                time.sleep(0.1)


def start_apiserver(workdir: Path, store_endpoints: str, *, name: str = "apiserver",
                    extra_args: Sequence[str] = (), timeout: float = 60.0, port: int = 0,
                    credentials: Credentials | None = None) -> Process:
    """`credentials`: the api-server serves TLS (its flags in `extra_args`); wait with these."""
    port = port or free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")

    def ready(proc: Process, timeout: float) -> None:
        wait_serving(proc, timeout, credentials=credentials)

    proc = Process(name, apiserver_argv(store_endpoints, port, extra=extra_args), workdir / f"{name}.log",
                   "127.0.0.1", port, env=env, ready=ready)
    return proc.start(timeout=timeout)


@dataclass
class ControlPlane:
    store: EtcdCluster
    apiservers: list[Process] = field(default_factory=list)
    pki_dir: Path | None = None

    @property
    def admin(self) -> Credentials | None:
        """The admin's client credentials (None when the api-servers run --insecure)."""
        return None if self.pki_dir is None else Credentials.from_pki(self.pki_dir, pki.ADMIN)

    @property
    def store_endpoints(self) -> str:
        return self.store.endpoints

    @property
    def apiserver_endpoints(self) -> str:
        return ",".join(a.endpoint for a in self.apiservers)

    def stop(self) -> None:
        for a in self.apiservers:
            a.stop()
        self.store.stop()


@contextlib.contextmanager
def control_plane(workdir: Path, *, apiservers: int = 1, store_members: int = 1,
                  apiserver_args: Sequence[str] = (), pki_dir: Path | None = None) -> Iterator[ControlPlane]:
    """A store cluster and `apiservers` api-servers on it, stopped when the block ends; with
    `pki_dir`, the api-servers serve TLS with certificates from there (created if missing)."""
    workdir.mkdir(parents=True, exist_ok=True)
    tls_args: list[str] = []
    if pki_dir is not None:
        pki.PKIDir(pki_dir).ensure(pki.control_plane_specs(apiserver_ips=[], store_members=[]), now=pki.utcnow())
        # The etcd here is plaintext on loopback: no --etcd-* flags.
        api_tls = tls.apiserver_tls(pki_dir)
        tls_args = daemons.apiserver_tls_flags(dataclasses.replace(api_tls, store=None))
    store = start_etcd(workdir, members=store_members)
    cp = ControlPlane(store, pki_dir=pki_dir)
    try:
        for i in range(apiservers):
            # Each api-server talks to "its" store member first, as when they run side by side.
            members = store.members[i % len(store.members):] + store.members[:i % len(store.members)]
            cp.apiservers.append(start_apiserver(workdir, ",".join(m.endpoint for m in members),
                                                 name=f"apiserver{i}", extra_args=[*tls_args, *apiserver_args],
                                                 credentials=cp.admin))
        yield cp
    finally:
        cp.stop()

"""Launch a Skiff store cluster of real processes on loopback, for tests, benchmarks and labs.

    with StoreCluster(3) as c:          # members s1..s3 on 127.0.0.x, free ports, a temp dir
        c.endpoints                     # ["127.0.0.7:41235", ...] (client host:port)
        leader = c.leader()             # name of the member that leads (asks each Status)
        c.kill(leader)                  # kill -9
        c.start_member(leader)          # restart it on the same data dir
        c.add_member("s4"); c.remove_member("s4")

Each member is `python -m controlplane.store` (its command line from skiff.daemons) with a
random cluster password; its log is
`<base_dir>/<name>.log` (read it with `c.log(name)` when a test fails). With `pki_dir`, every
member serves mutual TLS with a certificate from that directory's CA (created if missing) and
the helper itself calls as the admin; without, members run `--insecure`. Everything started is
stopped, and a temp base dir removed, by `close()` / leaving the `with` block.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import grpc

from skiff import daemons, identity, pki, tls
from skiffpb.etcd import rpc_pb2, rpc_pb2_grpc


def free_addr(host: str | None = None) -> str:
    """A free TCP host:port on loopback (a random 127.0.0.x when host is None)."""
    for _ in range(50):
        h = host or f"127.0.0.{random.randint(2, 254)}"
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((h, 0))
            except OSError:
                continue
            return f"{h}:{s.getsockname()[1]}"
    raise RuntimeError("no free loopback port found")


@dataclass
class Member:
    name: str
    client: str
    peer: str
    data_dir: str
    log_path: str
    proc: subprocess.Popen[bytes] | None = None
    extra_args: list[str] = field(default_factory=list)
    member_id: int = 0  # learned from the member's Status answers; kept while it is down

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class StoreCluster:
    def __init__(self, size: int = 3, *, base_dir: str | None = None, password: str | None = None,
                 extra_args: list[str] | tuple[str, ...] = (), python: str = sys.executable,
                 token: str | None = None, pki_dir: str | None = None) -> None:
        self._own_dir = base_dir is None
        self.base_dir = base_dir or tempfile.mkdtemp(prefix="skiff-store-")
        os.makedirs(self.base_dir, exist_ok=True)
        self.password = password or secrets.token_hex(16)
        self.extra_args = list(extra_args)
        self.python = python
        self.token = token or f"test-{secrets.token_hex(4)}"
        self.members: dict[str, Member] = {}
        for i in range(1, size + 1):
            self._new_member(f"s{i}")
        self._initial = dict(self.members)
        self.pki_dir = pki_dir

    def _ensure_pki(self) -> None:
        if self.pki_dir is None:
            return
        specs = [pki.CertSpec(pki.store_cert(m.name), f"store-{m.name}", (), ("localhost",),
                              ("127.0.0.1", m.client.rpartition(":")[0]), server=True)
                 for m in self.members.values()]
        specs.append(pki.CertSpec(pki.ADMIN, identity.ADMIN, (identity.MASTERS,), client=True))
        pki.PKIDir(self.pki_dir).ensure(specs, now=pki.utcnow())

    @property
    def admin_credentials(self) -> tls.Credentials | None:
        return None if self.pki_dir is None else tls.Credentials.from_pki(self.pki_dir, pki.ADMIN)

    def channel(self, name: str) -> grpc.Channel:
        """A (blocking) channel to member `name`'s client port, as the admin under TLS."""
        creds = self.admin_credentials
        target = self.members[name].client
        if creds is None:
            return grpc.insecure_channel(target)
        return grpc.secure_channel(target, creds.channel_credentials())

    def _new_member(self, name: str) -> Member:
        host = f"127.0.0.{random.randint(2, 254)}"
        m = Member(name=name, client=free_addr(host), peer=free_addr(host),
                   data_dir=os.path.join(self.base_dir, name), log_path=os.path.join(self.base_dir, f"{name}.log"))
        self.members[name] = m
        return m

    # ------------------------------------------------------------ addresses

    @property
    def endpoints(self) -> list[str]:
        return [m.client for m in self.members.values()]

    @property
    def endpoints_str(self) -> str:
        return ",".join(self.endpoints)

    def client(self, name: str) -> str:
        return self.members[name].client

    def _initial_cluster(self, members: list[Member]) -> str:
        return ",".join(f"{m.name}={m.peer}" for m in members)

    # ------------------------------------------------------------ processes

    def start(self, *, timeout: float = 30.0) -> StoreCluster:
        """Start every member and wait for a leader; on failure nothing is left running."""
        try:
            for name in self.members:
                self.start_member(name, wait=False)
            self.wait_ready(timeout=timeout)
        except BaseException:
            for name in self.members:
                self.kill(name)
            raise
        return self

    def start_member(self, name: str, *, wait: bool = True, state: str = "new", timeout: float = 30.0) -> None:
        m = self.members[name]
        if m.running:
            return
        if name not in self._initial:
            state = "existing"
        cluster_members = list(self._initial.values()) if state == "new" else list(self.members.values())
        self._ensure_pki()
        cmd = [
            *daemons.store(self.python, name=m.name, data_dir=m.data_dir, listen_client=m.client, listen_peer=m.peer,
                           initial_cluster=self._initial_cluster(cluster_members), initial_cluster_state=state,
                           initial_cluster_token=self.token,
                           tls=None if self.pki_dir is None else tls.store_tls(self.pki_dir, m.name)),
            *self.extra_args, *m.extra_args,
        ]
        env = dict(os.environ, SKIFF_STORE_PASSWORD=self.password)
        with open(m.log_path, "ab") as log:
            m.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        if wait:
            self._wait_serving(m, timeout)

    def kill(self, name: str) -> None:
        """kill -9, as a crash would."""
        m = self.members[name]
        if m.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                m.proc.send_signal(signal.SIGKILL)
            m.proc.wait()
            m.proc = None

    def stop_member(self, name: str, *, timeout: float = 10.0) -> None:
        m = self.members[name]
        if m.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            m.proc.send_signal(signal.SIGTERM)
        try:
            m.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            m.proc.kill()
            m.proc.wait()
        m.proc = None

    def stop(self) -> None:
        for name in self.members:
            self.stop_member(name)

    def close(self) -> None:
        for name in list(self.members):
            self.kill(name)
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> StoreCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log(self, name: str) -> str:
        try:
            with open(self.members[name].log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    # ------------------------------------------------------------ status

    def status(self, name: str, *, timeout: float = 2.0) -> rpc_pb2.StatusResponse | None:
        with self.channel(name) as ch:
            try:
                resp: rpc_pb2.StatusResponse = rpc_pb2_grpc.MaintenanceStub(ch).Status(
                    rpc_pb2.StatusRequest(), timeout=timeout)
            except grpc.RpcError:
                return None
        self.members[name].member_id = resp.header.member_id
        return resp

    def _wait_serving(self, m: Member, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if m.proc is not None and m.proc.poll() is not None:
                tail = self.log(m.name)[-3000:]
                raise RuntimeError(f"store member {m.name} exited with {m.proc.returncode}:\n{tail}")
            if self.status(m.name, timeout=0.5) is not None:
                return
            time.sleep(0.1)
        raise TimeoutError(f"store member {m.name} not serving after {timeout}s:\n{self.log(m.name)[-3000:]}")

    def leader(self, *, timeout: float = 15.0) -> str:
        """Name of the member every running member agrees leads (polls until they agree).

        The name may be that of a member that is no longer running (ids are remembered from
        earlier answers): after a leader is killed, survivors still naming it must show up.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = set()
            for name, m in self.members.items():
                if not m.running:
                    continue
                st = self.status(name, timeout=0.5)
                if st is not None and st.leader:
                    seen.add(st.leader)
            if len(seen) == 1:
                lid = seen.pop()
                names = {m.member_id: n for n, m in self.members.items() if m.member_id}
                if lid in names:
                    return names[lid]
            time.sleep(0.1)
        raise TimeoutError(f"no agreed leader within {timeout}s")

    def wait_ready(self, *, timeout: float = 30.0) -> str:
        for m in self.members.values():
            if m.proc is not None:
                self._wait_serving(m, timeout)
        return self.leader(timeout=timeout)

    # ------------------------------------------------------------ membership

    def add_member(self, name: str, *, via: str | None = None, timeout: float = 30.0) -> Member:
        """MemberAdd through a running member, then start the new process to join."""
        m = self._new_member(name)
        via = via or next(n for n, x in self.members.items() if x.running)
        with self.channel(via) as ch:
            rpc_pb2_grpc.ClusterStub(ch).MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=[f"http://{m.peer}"]),
                                                  timeout=timeout)
        self.start_member(name, state="existing", timeout=timeout)
        return m

    def remove_member(self, name: str, *, via: str | None = None, timeout: float = 30.0) -> None:
        """MemberRemove through another running member, then stop the removed process."""
        m = self.members[name]
        mid = self.status(name).header.member_id if m.running else None  # type: ignore[union-attr]
        if mid is None:
            from controlplane.store.raft import member_id_for

            mid = member_id_for(m.peer)
        via = via or next(n for n, x in self.members.items() if x.running and n != name)
        with self.channel(via) as ch:
            rpc_pb2_grpc.ClusterStub(ch).MemberRemove(rpc_pb2.MemberRemoveRequest(ID=mid), timeout=timeout)
        self.stop_member(name)
        del self.members[name]

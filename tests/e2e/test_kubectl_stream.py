"""The real kubectl (1.35) in interactive sessions against a real one-host lab: `exec -i` with
stdin, `exec -it` through a pseudo-terminal (resize included), `attach` to a container started
with stdin, `port-forward` to a pod and to a Service (a page fetched through 127.0.0.1 only),
and RBAC refusing pods/portforward and pods/attach to a user without them.

The lab is `make up`'s shape on its own LAN, as in test_kubectl.py; the sessions run the whole
path: kubectl's WebSocket, the api-server (rest/streams.py), the node agent's Stream and
containerd's streaming server over SPDY (nodeagent/streaming.py).
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy import netplan
from deploy.lab import Lab, LabSpec
from tests.support import labs
from tests.support.kubectl import KUBECTL, Kubectl, require_kubectl, runner, until, with_token

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "examples" / "web"
LAB: Lab | None = None  # for tests/e2e/conftest.py: daemon logs in failure reports

ATTACHABLE = """apiVersion: v1
kind: Pod
metadata: {name: echoer}
spec:
  restartPolicy: Never
  containers:
  - name: echoer
    image: skiff/web:1.0
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "while read line; do echo \\"got $line\\"; done; echo stdin closed"]
    stdin: true
    stdinOnce: true
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Lab]:
    require_kubectl()
    prefix = f"s{os.getpid() % 10000}"
    spec = LabSpec(prefix=prefix, combined=True, store_members=1, workers=0,
                   lan_cidr=netplan.free_lan(range(220, 250), 3), min_sync_period="0s")
    with labs.running(spec, tmp_path_factory, request.module) as the_lab:
        yield the_lab


@pytest.fixture(scope="module")
def kubectl(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    return runner(lab.write_kubeconfig(tmp_path_factory.mktemp("kube") / "config"))


def running(kubectl: Kubectl, selector: str) -> list[str]:
    out = kubectl("get", "pods", "-l", selector, "-o",
                  "jsonpath={range .items[*]}{.metadata.name} {.status.phase} "
                  "{.status.containerStatuses[0].ready}{\"\\n\"}{end}").stdout
    return [line.split()[0] for line in out.splitlines() if line.endswith(" Running true")]


@pytest.fixture(scope="module")
def web(kubectl: Kubectl) -> list[str]:
    kubectl("apply", "-f", str(WEB / "web.yaml"))
    until(lambda: len(running(kubectl, "app=web")) == 2, timeout=120, what="both web pods ready")
    return running(kubectl, "app=web")


def test_exec_with_stdin(kubectl: Kubectl, web: list[str]) -> None:
    """`echo hi | kubectl exec -i POD -- cat` prints hi and ends (stdin's close reaches cat)."""
    done = kubectl("exec", "-i", web[0], "--", "cat", input="hi\n", timeout=30)
    assert done.stdout == "hi\n", done.stderr
    counted = kubectl("exec", "-i", web[0], "--", "sh", "-c", "wc -l; exit 4", input="a\nb\nc\n", check=False,
                      timeout=30)
    assert (counted.stdout.strip(), counted.returncode) == ("3", 4), counted.stderr


def read_until(fd: int, pattern: str, *, timeout: float = 20) -> str:
    seen = b""
    deadline = time.monotonic() + timeout
    while re.search(pattern, seen.decode(errors="replace")) is None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{pattern!r} not seen on the terminal in {timeout:.0f}s: {seen!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the other side closed
                break
            seen += chunk
    return seen.decode(errors="replace")


def set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def test_exec_with_a_tty(kubectl: Kubectl, web: list[str]) -> None:
    """`kubectl exec -it POD -- sh` on a pseudo-terminal: a shell prompt, commands typed, the
    terminal's size (at start and after a resize) as the container sees it, and exit."""
    master, slave = pty.openpty()
    set_size(slave, 33, 101)
    proc = subprocess.Popen([str(KUBECTL), "--kubeconfig", str(kubectl.config),  # type: ignore[attr-defined]
                             "exec", "-it", web[0], "--", "sh"],
                            stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    try:
        read_until(master, r"/www # ")  # busybox sh's prompt (it then asks for the cursor position: ignored)
        os.write(master, b"stty size; echo $((6*7))\r")
        said = read_until(master, r"\n42\r?\n")
        assert "33 101" in said, said
        set_size(master, 40, 120)
        os.kill(proc.pid, signal.SIGWINCH)  # what the terminal sends its foreground process on a resize
        deadline = time.monotonic() + 15
        while True:
            os.write(master, b"stty size\r")
            if "40 120" in read_until(master, r"\d+ \d+\r?\n", timeout=5):
                break
            assert time.monotonic() < deadline, "the resize never reached the container's terminal"
            time.sleep(0.5)
        os.write(master, b"exit 0\r")
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_attach_to_a_container_with_stdin(kubectl: Kubectl, web: list[str], tmp_path: Path) -> None:
    manifest = tmp_path / "echoer.yaml"
    manifest.write_text(ATTACHABLE)
    kubectl("apply", "-f", str(manifest))
    until(lambda: kubectl("get", "pod", "echoer", "-o", "jsonpath={.status.phase}").stdout == "Running",
               timeout=60, what="the echoer pod running")
    spec = kubectl("get", "pod", "echoer", "-o", "jsonpath={.spec.containers[0].stdin} "
                   "{.spec.containers[0].stdinOnce}").stdout
    assert spec == "true true"
    done = kubectl("attach", "-i", "echoer", input="one\ntwo\n", timeout=40)
    assert "got one\ngot two\n" in done.stdout, (done.stdout, done.stderr)
    # stdinOnce: the container's stdin closed with the session, so its loop ended.
    until(lambda: "stdin closed" in kubectl("logs", "echoer").stdout, timeout=30,
               what="the container seeing its stdin closed")
    kubectl("delete", "-f", str(manifest), "--wait=false")


class Forward:
    """A running `kubectl port-forward` on 127.0.0.1 and the local port it chose."""

    def __init__(self, kubectl: Kubectl, target: str, remote: int) -> None:
        self.proc = subprocess.Popen([str(KUBECTL), "--kubeconfig", str(kubectl.config),  # type: ignore[attr-defined]
                                      "port-forward", "--address", "127.0.0.1", target, f":{remote}"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        line = self.proc.stdout.readline()
        found = re.match(r"Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)", line)
        if found is None:
            self.close()
            raise AssertionError(f"kubectl port-forward {target}: {line!r} {self.proc.stderr.read()!r}")
        self.port = int(found.group(1))

    def get(self, path: str = "/") -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as response:
            return str(response.read().decode())

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.mark.parametrize("target", ["pod", "svc/web-service", "deploy/web"], ids=["pod", "service", "deployment"])
def test_port_forward(kubectl: Kubectl, web: list[str], target: str) -> None:
    """Pages fetched through 127.0.0.1:LOCALPORT, several connections over one session."""
    name = f"pod/{web[0]}" if target == "pod" else target
    forward = Forward(kubectl, name, 80)
    try:
        pages = [forward.get() for _ in range(3)]
    finally:
        forward.close()
    assert all(page.startswith("hello from web-") for page in pages), pages
    if target == "pod":
        assert pages[0].strip() == f"hello from {web[0]}"


def test_port_forward_to_a_closed_port_fails_that_connection_only(kubectl: Kubectl, web: list[str]) -> None:
    forward = Forward(kubectl, f"pod/{web[0]}", 81)
    try:
        with pytest.raises(OSError):
            forward.get()
    finally:
        forward.close()


def test_rbac_refuses_portforward_and_attach(lab: Lab, kubectl: Kubectl, web: list[str], tmp_path: Path) -> None:
    """A service account bound to `view` reads pods but may not create pods/portforward or
    pods/attach: Forbidden, naming the user and the subresource."""
    kubectl("create", "serviceaccount", "looker")
    binding = tmp_path / "binding.yaml"
    binding.write_text("apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n"
                       "metadata: {name: looker-views, namespace: default}\n"
                       "subjects: [{kind: ServiceAccount, name: looker, namespace: default}]\n"
                       "roleRef: {kind: ClusterRole, apiGroup: rbac.authorization.k8s.io, name: view}\n")
    kubectl("apply", "-f", str(binding))
    token = kubectl("create", "token", "looker").stdout.strip()
    as_looker = with_token(lab.http_servers[0], lab.admin.ca_file, token, tmp_path)

    try:
        until(lambda: as_looker("get", "pod", web[0]).returncode == 0, timeout=15,
                   what="the service account reading pods once bound to view")
        who = 'User "system:serviceaccount:default:looker"'
        refused = as_looker("port-forward", "--address", "127.0.0.1", f"pod/{web[0]}", ":80")
        assert refused.returncode != 0
        assert f'{who} cannot create resource "pods/portforward" in API group "" in the namespace "default"' \
            in refused.stderr, refused.stderr
        refused = as_looker("attach", web[0])
        assert refused.returncode != 0
        assert f'{who} cannot create resource "pods/attach" in API group "" in the namespace "default"' \
            in refused.stderr, refused.stderr
    finally:
        kubectl("delete", "-f", str(binding))
        kubectl("delete", "serviceaccount", "looker")

"""Liveness, readiness and startup probes.

`ProbeCounter` is pure: it turns a stream of probe outcomes into a result using the probe's
success/failure thresholds (Kubernetes semantics: the result flips only after
`successThreshold` successes in a row or `failureThreshold` failures in a row).
`run_probe` performs one check: httpGet and tcpSocket connect from the node (through
NodeNetwork, so from the node's netns) to the pod IP; exec runs through CRI ExecSync.
`ProbeLoop` runs one probe of one container instance on its period and reports changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from nodeagent.cri import CriError, Runtime
from nodeagent.netns import NodeNetwork
from skiff import validation
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("nodeagent.probes")


def period(probe: t.Probe) -> float:
    return float(probe.period_seconds or 10)


def timeout(probe: t.Probe) -> float:
    return float(probe.timeout_seconds or 1)


@dataclass
class ProbeCounter:
    """Thresholds over consecutive outcomes; `result` starts at `initial`."""

    success_threshold: int
    failure_threshold: int
    result: bool
    successes: int = 0
    failures: int = 0

    @classmethod
    def for_probe(cls, probe: t.Probe, *, initial: bool) -> ProbeCounter:
        return cls(probe.success_threshold or 1, probe.failure_threshold or 3, initial)

    def observe(self, ok: bool) -> bool:
        """Record one outcome; True when `result` changed."""
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if not self.result and self.successes >= self.success_threshold:
                self.result = True
                return True
        else:
            self.failures, self.successes = self.failures + 1, 0
            if self.result and self.failures >= self.failure_threshold:
                self.result = False
                return True
        return False


def resolve_port(port: t.IntOrString, container: t.Container) -> int:
    if port.WhichOneof("value") == "int_val":
        return port.int_val
    name = port.str_val
    for p in container.ports:
        if p.name == name:
            return p.container_port
    if name.isdigit():
        return int(name)
    raise ValueError(f"probe port {name!r} is not a named port of container {container.name}")


def http_request(host: str, port: int, action: t.HTTPGetAction) -> bytes:
    """The probe's request. Raises ValueError for a path or header that could add lines to it
    (CR/LF): validation refuses those, but a pod may come from the store without it."""
    path = action.path or "/"
    problems = [validation.check_http_path(path), validation.check_http_host(host)]
    problems += [validation.check_http_header(h.name, h.value) for h in action.http_headers]
    problem = next((p for p in problems if p), None)
    if problem:
        raise ValueError(f"invalid HTTP probe: {problem}")
    headers = "".join(f"{h.name}: {h.value}\r\n" for h in action.http_headers)
    if not any(h.name.lower() == "host" for h in action.http_headers):
        headers += f"Host: {host}:{port}\r\n"
    return f"GET {path} HTTP/1.0\r\n{headers}User-Agent: skiff-probe\r\nConnection: close\r\n\r\n".encode()


async def _http(net: NodeNetwork, host: str, port: int, action: t.HTTPGetAction, limit: float) -> tuple[bool, str]:
    if (action.scheme or "HTTP").upper() != "HTTP":
        return False, "only HTTP probes are supported"
    request = http_request(host, port, action)
    reader, writer = await net.open_connection(host, port, timeout=limit)
    try:
        writer.write(request)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), limit)
        parts = line.decode(errors="replace").split()
        code = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
        return 200 <= code < 400, f"HTTP probe failed with statuscode: {code}" if not 200 <= code < 400 else ""
    finally:
        writer.close()


async def run_probe(probe: t.Probe, *, pod_ip: str, container: t.Container, container_id: str, runtime: Runtime,
                    net: NodeNetwork) -> tuple[bool, str]:
    """One probe attempt: (success, message)."""
    limit = timeout(probe)
    try:
        if probe.HasField("exec"):
            resp = await runtime.exec_sync(container_id, list(probe.exec.command), int(max(limit, 1)))
            ok = resp.exit_code == 0
            output = resp.stdout.decode(errors="replace")[-200:]
            return ok, "" if ok else f"exec probe exited {resp.exit_code}: {output}"
        if probe.HasField("http_get"):
            host = probe.http_get.host or pod_ip
            return await asyncio.wait_for(
                _http(net, host, resolve_port(probe.http_get.port, container), probe.http_get, limit), limit + 1)
        if probe.HasField("tcp_socket"):
            host = probe.tcp_socket.host or pod_ip
            _, writer = await net.open_connection(host, resolve_port(probe.tcp_socket.port, container), timeout=limit)
            writer.close()
            return True, ""
        return True, ""
    except (TimeoutError, OSError, CriError, ValueError) as exc:
        return False, f"probe failed: {exc or type(exc).__name__}"


async def run_hook(handler: t.LifecycleHandler, *, pod_ip: str, container: t.Container, container_id: str,
                   runtime: Runtime, net: NodeNetwork, timeout_seconds: float) -> tuple[bool, str]:
    """A lifecycle hook (postStart / preStop): the same actions as a probe, with the hook's own time limit."""
    probe = t.Probe(timeout_seconds=max(int(timeout_seconds), 1))
    for field in ("exec", "http_get", "tcp_socket"):
        if handler.HasField(field):
            getattr(probe, field).CopyFrom(getattr(handler, field))
    return await run_probe(probe, pod_ip=pod_ip, container=container, container_id=container_id, runtime=runtime,
                           net=net)


class ProbeLoop:
    """Runs one probe for one container instance until cancelled; reports result changes."""

    def __init__(self, kind: str, probe: t.Probe, *, pod_ip: str, container: t.Container, container_id: str,
                 runtime: Runtime, net: NodeNetwork, on_change: Callable[[str, str, bool, str], None],
                 gate: Callable[[], bool] = lambda: True) -> None:
        self.kind = kind
        self.probe = probe
        self.pod_ip = pod_ip
        self.container = container
        self.container_id = container_id
        self.runtime = runtime
        self.net = net
        self.on_change = on_change
        self.gate = gate
        initial = kind == "liveness"
        self.counter = ProbeCounter.for_probe(probe, initial=initial)

    async def run(self) -> None:
        await asyncio.sleep(float(self.probe.initial_delay_seconds))
        while True:
            if self.gate():
                ok, message = await run_probe(self.probe, pod_ip=self.pod_ip, container=self.container,
                                              container_id=self.container_id, runtime=self.runtime, net=self.net)
                if not ok:
                    log.debug("%s probe of %s: %s", self.kind, self.container.name, message)
                if self.counter.observe(ok):
                    self.on_change(self.container_id, self.kind, self.counter.result, message)
                if self.kind == "startup":
                    if self.counter.result:
                        return  # a startup probe stops once it succeeded
                    if self.counter.failures >= self.counter.failure_threshold:
                        self.on_change(self.container_id, "startup-failed", False, message)
                        return
            await asyncio.sleep(period(self.probe))

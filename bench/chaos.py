"""The chaos suite (`make chaos`; a short version runs in CI as tests/e2e/test_chaos.py), issue 15.

A network-namespace lab with 3 control-plane hosts (cp, cp2, cp3: a store member, an api-server,
a controller manager and a scheduler each, leader-elected) and 2 workers (n1, n2). While it runs:
- a client pod on n1 requests a ClusterIP Service in front of a 4-replica Deployment every
  0.1 s, logging `<unix time> ok|FAIL` per request;
- a writer (a thread of this process, a client of all three api-servers) creates and updates
  ConfigMaps and records every acknowledged write, and every write whose outcome it cannot know
  (a timeout, an unavailable server);
- the fault schedule kills -9, then restarts, in turn: each store member (starting with the
  leader), each api-server, the controller manager's and the scheduler's leaders, n2's node agent,
  n1's netproxy (the client's node), n2's containerd; then cuts n2 off from the control plane
  for a while. After each restart it waits until the restarted part answers again.

At the end: every acknowledged write is present with its value (or a later one whose outcome
was unknown); the Deployment converges to 4 Ready replicas; the client's failed requests are
counted, split into those inside the windows where a whole worker was cut off and those
outside them (which must be none); after `lab.down()` no process of the lab is left (found by
the lab's directory in their command lines) and `lab.leftovers()` is empty. The report is JSON:
bench/results/chaos.json for `make chaos` (--report elsewhere).

What must hold: the lab is torn down in `finally` whatever happens; no traffic leaves the root
namespace except to the api-servers through the lab uplink (the client runs in a pod, faults are
signals and iptables rules inside the lab's namespaces). Needs root.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import grpc

from bench import e2e as bench_e2e
from bench import meta
from deploy import netplan
from deploy.lab import Lab, LabSpec
from skiff import errors, kinds, taints, tls
from skiff.client import Client
from skiff.retry import eventually
from skiffpb.api.v1 import types_pb2 as t
from skiffpb.etcd import rpc_pb2 as etcd
from skiffpb.etcd import rpc_pb2_grpc as etcd_grpc

RESULTS = meta.RESULTS_DIR / "chaos.json"
WEB = "skiff/web:1.0"
APP = "chaos-web"
REPLICAS = 4
CLIENT_POD = "chaos-client"
CLIENT_NODE = "n1"
CUT_WORKER = "n2"
# One request to the ClusterIP every 0.1 s, each line stamped with the pod's clock (the host's).
CLIENT_LOOP = (
    'while true; do '
    'if printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 2 "$TARGET" 80 | grep -q "hello from"; '
    'then echo "$(date +%s) ok"; else echo "$(date +%s) FAIL"; fi; sleep 0.1; done'
)
# Failures this long after a cut window ends still count as inside it (a request in flight).
WINDOW_SLACK = 3.0


@dataclass(frozen=True)
class Timing:
    down: float  # how long a killed process stays dead
    gap: float  # between two faults
    cut: float  # how long the worker is cut off
    settle: float  # the longest wait for a restarted part to answer


QUICK = Timing(down=2.0, gap=2.0, cut=20.0, settle=60.0)
FULL = Timing(down=10.0, gap=10.0, cut=60.0, settle=120.0)


@dataclass
class Fault:
    name: str
    host: str
    daemon: str
    started: float = 0.0
    ended: float = 0.0
    recovered_s: float = 0.0  # from the restart until it answered again
    cut: bool = False  # a whole worker cut off: client failures allowed inside
    note: str = ""


def say(text: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {text}", flush=True)


# ---------------------------------------------------------------------- the writer


@dataclass
class WriteLog:
    """What the writer knows: per ConfigMap the last acknowledged value, and the values written
    after it whose outcome is unknown (any of them may be what the store holds)."""

    acked: dict[str, str] = field(default_factory=dict)
    unknown_after: dict[str, list[str]] = field(default_factory=dict)
    acks: int = 0
    definite_failures: int = 0
    unknown_outcomes: int = 0

    def ack(self, name: str, value: str) -> None:
        self.acked[name] = value
        self.unknown_after[name] = []
        self.acks += 1

    def unknown(self, name: str, value: str) -> None:
        self.unknown_after.setdefault(name, []).append(value)
        self.unknown_outcomes += 1

    def check(self, stored: dict[str, str | None]) -> list[str]:
        """Problems: acknowledged writes missing or with a value nobody wrote after them."""
        out = []
        for name, value in self.acked.items():
            got = stored.get(name)
            if got is None:
                out.append(f"{name}: acknowledged ({value}) but missing")
            elif got != value and got not in self.unknown_after.get(name, []):
                out.append(f"{name}: holds {got}, acknowledged {value} (unknown after it: "
                           f"{self.unknown_after.get(name)})")
        return out


# A definite refusal: the write did not happen. Anything else may or may not have happened: an
# unavailable server or a timeout, and also a conflict or "already exists", which the client's
# own retry of a write that did happen gets (only this writer writes these objects).
DEFINITE = (errors.NotFoundError, errors.InvalidError)


class Writer(threading.Thread):
    def __init__(self, endpoints: list[str], credentials: tls.Credentials | None, *, names: int = 40) -> None:
        super().__init__(name="chaos-writer", daemon=True)
        self.endpoints = endpoints
        self.credentials = credentials
        self.names = names
        self.log = WriteLog()
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported by the caller
            self.error = exc

    async def _run(self) -> None:
        rng = random.Random(15)
        async with Client(self.endpoints, timeout=5.0, credentials=self.credentials) as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                name = f"w-{rng.randrange(self.names):02d}"
                value = f"{n}"
                try:
                    if name not in self.log.acked and name not in self.log.unknown_after:
                        cm = kinds.new(kinds.by_kind("ConfigMap"), name, "default")  # type: ignore[arg-type]
                        assert isinstance(cm, t.ConfigMap)
                        cm.data["v"] = value
                        await client.create(cm)
                    else:
                        current = await client.get(t.ConfigMap, name, "default")
                        current.data["v"] = value
                        await client.update(current)
                    self.log.ack(name, value)
                except DEFINITE:
                    self.log.definite_failures += 1
                except errors.SkiffError:
                    self.log.unknown(name, value)
                    await asyncio.sleep(0.2)
                await asyncio.sleep(0.05)

    async def stored(self) -> dict[str, str | None]:
        async with Client(self.endpoints, timeout=10.0, credentials=self.credentials) as client:
            items = (await client.list(t.ConfigMap, namespace="default")).items
        return {cm.metadata.name: cm.data.get("v") for cm in items if cm.metadata.name.startswith("w-")}


# ---------------------------------------------------------------------- the cluster


def deployment() -> t.Deployment:
    d = kinds.new(kinds.by_kind("Deployment"), APP, "default")  # type: ignore[arg-type]
    assert isinstance(d, t.Deployment)
    d.spec.replicas = REPLICAS
    d.spec.selector.match_labels["app"] = APP
    d.spec.template.metadata.labels["app"] = APP
    d.spec.template.spec.termination_grace_period_seconds = 10
    c = d.spec.template.spec.containers.add(name="web", image=WEB, image_pull_policy="IfNotPresent")
    c.ports.add(container_port=80)
    c.env.add(name="DRAIN_SECONDS", value="3")  # serve a little after TERM, while proxies drop it
    c.readiness_probe.http_get.path = "/"
    c.readiness_probe.http_get.port.int_val = 80
    c.readiness_probe.period_seconds = 1
    return d


def service() -> t.Service:
    s = kinds.new(kinds.by_kind("Service"), APP, "default")  # type: ignore[arg-type]
    assert isinstance(s, t.Service)
    s.spec.selector["app"] = APP
    s.spec.ports.add(protocol="TCP", port=80).target_port.int_val = 80
    return s


def client_pod(cluster_ip: str) -> t.Pod:
    p = kinds.new(kinds.by_kind("Pod"), CLIENT_POD, "default")  # type: ignore[arg-type]
    assert isinstance(p, t.Pod)
    p.spec.node_name = CLIENT_NODE
    p.spec.termination_grace_period_seconds = 1
    c = p.spec.containers.add(name="client", image=WEB, image_pull_policy="IfNotPresent",
                              command=["/bin/sh", "-c", CLIENT_LOOP])
    c.env.add(name="TARGET", value=cluster_ip)
    return p


def ready(pod: t.Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)


async def ready_pods(client: Client) -> list[t.Pod] | None:
    pods = [p for p in (await client.list(t.Pod, namespace="default", label_selector=f"app={APP}")).items
            if not p.metadata.HasField("deletion_timestamp")]
    good = [p for p in pods if ready(p)]
    return good if len(good) == REPLICAS == len(pods) else None


def store_channel(lab: Lab, url: str) -> grpc.aio.Channel:
    """A channel to a store member's client port, as the lab's admin (the store serves TLS)."""
    return grpc.aio.secure_channel(url, lab.admin.channel_credentials(), options=lab.admin.channel_options())


async def store_leader(lab: Lab) -> str:
    """The name of the store member the members agree leads ("" when they do not agree)."""
    ids: dict[int, str] = {}
    leaders: set[int] = set()
    for m in lab.cluster.members:
        try:
            async with store_channel(lab, m.client_url) as ch:
                st = await etcd_grpc.MaintenanceStub(ch).Status(etcd.StatusRequest(), timeout=3)
        except grpc.aio.AioRpcError:
            continue
        ids[st.header.member_id] = m.name
        leaders.add(st.leader)
    return ids.get(leaders.pop(), "") if len(leaders) == 1 else ""


async def member_answers(lab: Lab, url: str) -> bool:
    async with store_channel(lab, url) as ch:
        await etcd_grpc.MaintenanceStub(ch).Status(etcd.StatusRequest(), timeout=3)
    return True


async def api_answers(lab: Lab, url: str) -> bool:
    async with Client([url], timeout=3.0, credentials=lab.admin) as client:
        await client.version()
    return True


async def lease_holder(client: Client, name: str) -> str:
    lease = await client.get(t.Lease, name, "kube-system")
    return str(lease.spec.holder_identity)


async def node_ready(client: Client, name: str) -> bool:
    return taints.takes_new_pods(await client.get(t.Node, name))


def cut(lab: Lab, worker: str, *, on: bool) -> None:
    """Drop (or stop dropping) all traffic between `worker` and every control-plane host."""
    op = "-I" if on else "-D"
    for cp in lab.control_plane_hosts:
        address = lab.net.host(cp).ip
        for chain, side in (("INPUT", "-s"), ("OUTPUT", "-d")):
            lab.run_in(worker, ["iptables", "-w", op, chain, side, address, "-j", "DROP"], check=on)


def lab_processes(lab: Lab) -> list[str]:
    """Processes whose command line names the lab's directory (daemons, shims): `pid cmdline`."""
    marker = str(lab.dir)
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            out.append(f"{entry} {cmdline.strip()[:160]}")
    return out


# ---------------------------------------------------------------------- the schedule


class Chaos:
    def __init__(self, lab: Lab, timing: Timing) -> None:
        self.lab = lab
        self.timing = timing
        self.faults: list[Fault] = []
        self.restarted_at = 0.0  # wall clock of the last restart

    async def heartbeat_since_restart(self, client: Client, node: str) -> bool:
        """The node's agent renewed its Lease after the last restart (a restarted agent is back)."""
        lease = await client.get(t.Lease, node, "kube-node-lease")
        return lease.spec.renew_time.ToNanoseconds() / 1e9 > self.restarted_at

    async def kill_and_restart(self, fault: Fault, answers: Callable[[], Any]) -> None:
        fault.started = time.time()
        self.lab.kill_daemon(fault.host, fault.daemon)
        say(f"{fault.name}: killed -9 {fault.daemon} on {fault.host}{' (' + fault.note + ')' if fault.note else ''}")
        await asyncio.sleep(self.timing.down)
        self.lab.start_daemon(fault.host, fault.daemon)
        self.restarted_at = time.time()
        restarted = time.monotonic()
        await eventually(answers, timeout=self.timing.settle, what=f"{fault.daemon} on {fault.host} answering again")
        fault.recovered_s = round(time.monotonic() - restarted, 1)
        fault.ended = time.time()
        say(f"{fault.name}: restarted, answering after {fault.recovered_s} s")
        self.faults.append(fault)
        await asyncio.sleep(self.timing.gap)

    async def run(self, client: Client) -> None:
        lab = self.lab
        leader = await eventually(lambda: store_leader(lab), timeout=30, what="a store leader")
        members = sorted(lab.cluster.members, key=lambda m: m.name != leader)
        for m in members:
            now_leader = await eventually(lambda: store_leader(lab), timeout=30, what="a store leader")
            await self.kill_and_restart(
                Fault(f"store member {m.name}", m.host, f"store-{m.name}",
                      note="the leader" if m.name == now_leader else "a follower"),
                partial(member_answers, lab, m.client_url))
        for m in lab.cluster.members:
            await self.kill_and_restart(Fault(f"api-server {m.name}", m.host, f"apiserver-{m.name}"),
                                        partial(api_answers, lab, m.api_url))
        for daemon, lease in (("controllers", "skiff-controller-manager"), ("scheduler", "skiff-scheduler")):
            holder = await eventually(partial(lease_holder, client, lease), timeout=30, what=f"a {daemon} leader")
            await self.kill_and_restart(
                Fault(f"{daemon} leader", holder, daemon, note=f"lease {lease} held by {holder}"),
                partial(_leading_again, lab, client, lease, holder, daemon))
        await self.kill_and_restart(Fault("node agent", CUT_WORKER, "nodeagent"),
                                    partial(self.heartbeat_since_restart, client, CUT_WORKER))
        await self.kill_and_restart(Fault("netproxy", CLIENT_NODE, "netproxy"),
                                    lambda: _alive(lab, CLIENT_NODE, "netproxy"))
        await self.kill_and_restart(Fault("containerd", CUT_WORKER, "containerd"),
                                    partial(node_ready, client, CUT_WORKER))
        fault = Fault(f"{CUT_WORKER} cut off from the control plane", CUT_WORKER, "", cut=True)
        fault.started = time.time()
        cut(lab, CUT_WORKER, on=True)
        say(f"{fault.name} for {self.timing.cut:.0f} s")
        try:
            await asyncio.sleep(self.timing.cut)
        finally:
            cut(lab, CUT_WORKER, on=False)
        healed = time.monotonic()
        await eventually(lambda: node_ready(client, CUT_WORKER), timeout=self.timing.settle,
                   what=f"{CUT_WORKER} Ready after the cut")
        fault.recovered_s = round(time.monotonic() - healed, 1)
        fault.ended = time.time()
        self.faults.append(fault)
        say(f"{fault.name}: healed, Ready after {fault.recovered_s} s")


async def _leading_again(lab: Lab, client: Client, lease: str, host: str, daemon: str) -> bool:
    """The restarted daemon runs and someone renews the lease (a new leader, or it again)."""
    if not await _alive(lab, host, daemon):
        return False
    before = (await client.get(t.Lease, lease, "kube-system")).spec.renew_time.ToNanoseconds()
    await asyncio.sleep(2.5)  # the leader renews every 2 s
    after = (await client.get(t.Lease, lease, "kube-system")).spec.renew_time.ToNanoseconds()
    return after != before


async def _alive(lab: Lab, host: str, daemon: str) -> bool:
    d = lab.daemons(host).get(daemon)
    return d is not None and d.alive()


# ---------------------------------------------------------------------- the run


def classify(lines: list[str], faults: list[Fault]) -> dict[str, Any]:
    """The client's requests: totals, and failures inside and outside the cut windows (with slack)."""
    windows = [(f.started, f.ended + WINDOW_SLACK) for f in faults if f.cut]
    ok = inside = 0
    outside: list[str] = []
    for line in lines:
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            continue
        stamp, result = int(parts[0]), parts[1]
        if result == "ok":
            ok += 1
        elif any(start - 1 <= stamp <= end for start, end in windows):
            inside += 1
        else:
            outside.append(line)
    by_fault: dict[str, int] = {}
    for line in outside:
        stamp = int(line.split()[0])
        near = [f.name for f in faults if f.started - 1 <= stamp <= f.ended + WINDOW_SLACK]
        for name in near or ["(no fault)"]:
            by_fault[name] = by_fault.get(name, 0) + 1
    return {"requests": ok + inside + len(outside), "ok": ok, "failed_in_cut_windows": inside,
            "failed_outside_cut_windows": len(outside), "failures_outside_by_fault": by_fault,
            "first_failures_outside": outside[:20]}


async def scenario(lab: Lab, timing: Timing) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with lab.client(timeout=15.0) as client:
        await client.create(deployment())
        svc = await client.create(service())
        await eventually(lambda: ready_pods(client), timeout=120, what=f"{REPLICAS} Ready pods of {APP}")
        await client.create(client_pod(svc.spec.cluster_ip))

        async def requests_flowing() -> bool:
            data = b"".join([c async for c in client.logs("default", CLIENT_POD)])
            return data.count(b" ok") >= 20

        await eventually(requests_flowing, timeout=90, what="the client's requests flowing")
        writer = Writer(lab.api_servers, lab.admin)
        writer.start()
        chaos = Chaos(lab, timing)
        started = time.monotonic()
        try:
            await chaos.run(client)
        finally:
            await asyncio.sleep(timing.gap)
            writer.stop.set()
            writer.join(timeout=30)
        results["schedule_s"] = round(time.monotonic() - started, 1)
        results["faults"] = [{**asdict(f), "started": round(f.started, 1), "ended": round(f.ended, 1)}
                             for f in chaos.faults]
        if writer.error is not None:
            raise RuntimeError(f"the writer failed: {writer.error!r}")
        converged = time.monotonic()
        pods = await eventually(lambda: ready_pods(client), timeout=180, what=f"{APP} converging to {REPLICAS} Ready")
        results["deployment"] = {"replicas": REPLICAS, "ready": len(pods),
                                 "converged_after_schedule_s": round(time.monotonic() - converged, 1),
                                 "nodes": sorted(p.spec.node_name for p in pods)}
        stored = await writer.stored()
        problems = writer.log.check(stored)
        results["writes"] = {"acknowledged": writer.log.acks, "names": len(writer.log.acked),
                             "definite_failures": writer.log.definite_failures,
                             "unknown_outcomes": writer.log.unknown_outcomes, "lost_or_wrong": problems}
        data = b"".join([c async for c in client.logs("default", CLIENT_POD)])
        results["clusterip"] = classify(data.decode(errors="replace").splitlines(), chaos.faults)
    return results


def run(*, quick: bool, report: Path | None, lab_root: Path | None = None) -> dict[str, Any]:
    """Bring a lab up, run the scenario, tear it down; the report (also written to `report`)."""
    timing = QUICK if quick else FULL
    bench_run = meta.start("chaos")
    root = lab_root or Path(tempfile.mkdtemp(prefix="skiff-chaos-"))
    prefix = f"c{os.getpid() % 10000:04d}x"
    lan = netplan.free_lan(bench_e2e.LAN_OCTETS)
    spec = LabSpec(prefix=prefix, workers=2, control_planes=3, store_members=3, lan_cidr=lan,
                   node_monitor_grace_period="8s", node_lease_period="2s", default_toleration_seconds=4,
                   min_sync_period="0s")
    lab = Lab(spec, root)
    say(f"lab {prefix} on {lan}: 3 control-plane hosts, 2 workers ({'quick' if quick else 'full'} schedule)")
    up_started = time.monotonic()
    lab.up(progress=lambda line: say(f"  {line}"), timeout=180)
    results: dict[str, Any] = {"mode": "quick" if quick else "full", "timing": asdict(timing),
                               "lab_up_s": round(time.monotonic() - up_started, 1)}
    try:
        results.update(asyncio.run(scenario(lab, timing)))
    finally:
        notes = lab.down()
        results["down_notes"] = notes
        results["leftovers"] = lab.leftovers()
        results["leaked_processes"] = lab_processes(lab)
        say(f"lab {prefix} removed; leftovers {results['leftovers'] or 'none'}, "
            f"processes left {len(results['leaked_processes'])}")
    if report is not None:
        path = bench_run.write(results, report)
        say(f"report: {path}")
    return results


def problems(results: dict[str, Any]) -> list[str]:
    """What the run got wrong (empty: everything held)."""
    out = list(results.get("writes", {}).get("lost_or_wrong", []))
    ip = results.get("clusterip", {})
    if ip.get("failed_outside_cut_windows"):
        out.append(f"{ip['failed_outside_cut_windows']} ClusterIP requests failed outside the cut windows: "
                   f"{ip.get('failures_outside_by_fault')}")
    if results.get("leftovers"):
        out.append(f"lab leftovers: {results['leftovers']}")
    if results.get("leaked_processes"):
        out.append(f"processes left: {results['leaked_processes']}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="the short schedule (as in CI)")
    p.add_argument("--report", default=str(RESULTS), help="where to write the JSON report (default %(default)s)")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.chaos needs root (network namespaces, iptables, containerd)", file=sys.stderr)
        return 2
    results = run(quick=args.quick, report=Path(args.report))
    found = problems(results)
    print(json.dumps({k: results[k] for k in ("clusterip", "writes", "deployment") if k in results}, indent=2))
    for line in found:
        print(f"PROBLEM: {line}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

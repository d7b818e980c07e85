"""NetworkPolicy with real iptables and real traffic: upstream's truth table in a two-node netns lab.

Two netproxy instances run in-process (one per node, each with the NetworkPolicy enforcer,
iptables commands entering its node's namespace) on one in-process api-server. For each case
of tests/support/netpol_cases.py, step by step (a policy created, updated, a pod's or a
namespace's labels changed, the policy deleted), the test waits until both enforcers have
applied exactly the planned rules, then every pod probes every other pod on TCP and UDP 80 and
81 at once (and the node-local DNS, and a ClusterIP Service in front of x/a, so the policy is
seen to apply after DNAT), and the answers must be the truth table's. The nft backend runs the
whole table; legacy runs a few cases. `netproxy --cleanup` then leaves no policy chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from controlplane.apiserver.inprocess import InProcessApi
from netproxy.app import NetProxy
from netproxy.config import ProxyConfig
from netproxy.iptables.command import IptablesCmd
from netproxy.iptables.proxier import IptablesProxier
from netproxy.netpol.plan import plan
from skiff import errors
from skiffpb.api.v1 import types_pb2 as t
from tests.e2e.netproxy.netpol_lab import MatrixLab
from tests.support.netpol_cases import ALL, CASES, DNS_IP, NAMESPACES, NODES, PORTS, Step, ip_of, pod_object
from tests.support.prereq import require, require_binaries, require_root

pytestmark = pytest.mark.e2e

VIP = "10.96.0.80"  # Service x/web -> x/a:80
LEGACY_CASES = ["default-deny-ingress", "pod-and-namespace-selector", "egress-deny-dns-allowed"]


@pytest.fixture(scope="module")
def lab() -> Iterator[MatrixLab]:
    require_root()
    require_binaries("ip", "iptables-nft-restore", "iptables-legacy-restore", "nsenter")
    lab = MatrixLab(f"npm{os.getpid() % 100:02d}{os.urandom(1).hex()}")
    try:
        lab.up()
        # Pods on one node talk across the bridge: without br_netfilter iptables never sees it.
        for node in NODES:
            require(lab.bridge_nf(node) != "", "br_netfilter: /proc/sys/net/bridge missing in the node namespace")
            lab.exec(node, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1")
        yield lab
    finally:
        lab.down()
    assert lab.leftovers() == []


@contextlib.asynccontextmanager
async def cluster(lab: MatrixLab, backend: str) -> AsyncIterator[tuple[InProcessApi, dict[str, NetProxy]]]:
    async with InProcessApi() as api:
        for ns in NAMESPACES:
            await api.create(t.Namespace(metadata=t.ObjectMeta(name=ns, labels={"ns": ns})))
        for pod in ALL:
            p = pod_object(pod)
            status = t.PodStatus()
            status.CopyFrom(p.status)
            p.ClearField("status")
            created = await api.create(p)
            created.status.CopyFrom(status)
            await api.update_status(created)
        svc = t.Service(metadata=t.ObjectMeta(name="web", namespace="x"), spec=t.ServiceSpec(cluster_ip=VIP))
        svc.spec.ports.add(port=80)
        await api.create(svc)
        eps = t.Endpoints(metadata=t.ObjectMeta(name="web", namespace="x"))
        sub = eps.subsets.add()
        sub.addresses.add(ip=ip_of("x/a"))
        sub.ports.add(port=80)
        await api.create(eps)
        proxies: dict[str, NetProxy] = {}
        tasks = []
        for node in NODES:
            ipt = IptablesCmd(backend, netns=lab.ns(node))
            proxier = IptablesProxier(ipt, ProxyConfig(cluster_cidr="10.244.0.0/16"))
            proxies[node] = NetProxy(api, proxier, node_name=node, min_sync_period=0.0, sync_period=60.0, netpol=ipt)
            tasks.append(asyncio.ensure_future(proxies[node].run()))
        try:
            for proxy in proxies.values():
                assert proxy.netpol is not None
                await asyncio.wait_for(asyncio.gather(proxy.synced.wait(), proxy.netpol.synced.wait()), 30)
            yield api, proxies
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def enter(api: InProcessApi, step: Step) -> None:
    """Make the cluster hold exactly the step's policies and labels."""
    want = {(p.metadata.namespace, p.metadata.name): p for p in step.policies}
    for have in (await api.list(t.NetworkPolicy)).items:
        if (have.metadata.namespace, have.metadata.name) not in want:
            await api.delete(t.NetworkPolicy, have.metadata.name, have.metadata.namespace)
    for (ns, name), p in want.items():
        try:
            current = await api.get(t.NetworkPolicy, name, ns)
        except errors.NotFoundError:
            await api.create(p)
            continue
        current.spec.CopyFrom(p.spec)
        await api.update(current)
    for pod in ALL:
        ns, name = pod.split("/")
        current_pod = await api.get(t.Pod, name, ns)
        labels = dict(pod_object(pod, step.pod_labels.get(pod)).metadata.labels)
        if dict(current_pod.metadata.labels) != labels:
            current_pod.metadata.ClearField("labels")
            current_pod.metadata.labels.update(labels)
            await api.update(current_pod)
    for ns in NAMESPACES:
        current_ns = await api.get(t.Namespace, ns)
        labels = dict(current_ns.metadata.labels)
        wanted = {"ns": ns, "kubernetes.io/metadata.name": ns, **step.ns_labels.get(ns, {})}
        if labels != wanted:
            current_ns.metadata.ClearField("labels")
            current_ns.metadata.labels.update(wanted)
            await api.update(current_ns)


async def applied(proxies: dict[str, NetProxy], step: Step, timeout: float = 20.0) -> float:
    """Wait until every enforcer has written exactly the step's planned rules; the seconds it took."""
    start = time.monotonic()
    want = {node: plan(step.policies, step.pods(), step.namespaces(), node).frozen() for node in NODES}
    while True:
        done = all(p.netpol is not None and p.netpol.writer.applied == want[n] for n, p in proxies.items())
        if done:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError("the planned NetworkPolicy rules were not applied in time")
        await asyncio.sleep(0.02)


def targets(src: str) -> dict[str, tuple[str, int, str]]:
    """Probe target -> (destination, port, protocol) the truth table is asked for."""
    out = {f"{ip_of(d)}:{port}/{proto}": (d, port, proto) for d in ALL if d != src for port, proto in PORTS}
    if src != "x/a":
        out[f"{VIP}:80/tcp"] = ("x/a", 80, "tcp")
    return out


async def check_matrix(lab: MatrixLab, step: Step, label: str) -> None:
    dns = [f"{DNS_IP}:53/udp", f"{DNS_IP}:53/tcp"]

    def expected(src: str, target: str) -> str:
        """The answer expected: the pod's name, "dns", or "" (no answer)."""
        if target in dns:
            assert step.dns is not None
            return "dns" if step.dns(src) else ""
        d, port, proto = targets(src)[target]
        return d if step.expect(src, d, port, proto) else ""

    async def from_pod(src: str) -> list[str]:
        probes = [*targets(src), *(dns if step.dns is not None else [])]
        got = await asyncio.to_thread(lab.probe, src, probes)
        wrong = [k for k in probes if got[k] != expected(src, k)]
        if wrong:  # a lost first packet is not a verdict: ask once more, as upstream's probes retry
            again = await asyncio.to_thread(lab.probe, src, wrong, 2.0)
            wrong = [k for k in wrong if again[k] != expected(src, k)]
        return [f"{src} -> {k}: expected {expected(src, k) or 'no answer'}" for k in wrong]

    results = await asyncio.gather(*(from_pod(src) for src in ALL))
    wrong = [w for r in results for w in r]
    assert wrong == [], f"{label}: {len(wrong)} wrong answers:\n" + "\n".join(wrong[:40])


def cases(backend: str) -> list[str]:
    return list(CASES) if backend == "nft" else LEGACY_CASES


@pytest.mark.parametrize("backend", ["nft", "legacy"])
async def test_truth_table_with_real_traffic(lab: MatrixLab, backend: str) -> None:
    timings: list[float] = []
    async with cluster(lab, backend) as (api, proxies):
        for name in cases(backend):
            for i, step in enumerate(CASES[name]):
                await enter(api, step)
                timings.append(await applied(proxies, step))
                await check_matrix(lab, step, f"{name} step {i}")
        await enter(api, Step([], lambda *_: True))
    print(f"{backend}: {len(timings)} steps, change -> rules applied max {max(timings) * 1000:.0f} ms")
    for node in NODES:
        out = await asyncio.to_thread(subprocess.run, ["nsenter", f"--net=/run/netns/{lab.ns(node)}", sys.executable,
                                                       "-m", "netproxy", "--cleanup"],
                                      capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 0, out.stderr
        text = await asyncio.to_thread(lab.save, node, backend)
        assert "SKIFF-" not in text and "KUBE-" not in text, text

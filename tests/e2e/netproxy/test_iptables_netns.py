"""netproxy programming real iptables (nft and legacy) inside a node's network namespace.

The whole process runs in-process — the api-server's registry (InProcessApi), informers, the sync runner, the iptables
proxier — with iptables commands entering node n1's namespace; all traffic is sent from
inside the lab's namespaces. One scenario per backend, step by step: ClusterIP with two
endpoints (one on each node) from the node, from a pod that is itself an endpoint (hairpin)
and from another pod on the same bridge; NodePort from the other node and from the node
itself; ClientIP affinity; REJECT for a Service without endpoints; externalTrafficPolicy and
internalTrafficPolicy Local (only the node's own endpoint); an endpoint change;
deleting a Service removes its chains; a restarted netproxy keeps Services working and
repairs what changed while it was down; `python -m netproxy --cleanup` leaves no KUBE-*
chain and no jump to one.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from controlplane.apiserver.inprocess import InProcessApi
from netproxy.app import NetProxy
from netproxy.config import ProxyConfig
from netproxy.iptables.command import IptablesCmd
from netproxy.iptables.proxier import IptablesProxier
from netproxy.model import Endpoint, ServicePort, sep_chain, svc_chain
from skiffpb.api.v1 import types_pb2 as t
from tests.e2e.netproxy.lab import NODE_IPS, POD_PORT, PODS, Lab, new_prefix
from tests.support.prereq import require, require_binaries, require_root

pytestmark = pytest.mark.e2e

VIP, EMPTY_VIP, STICKY_VIP, NODE_PORT = "10.96.0.10", "10.96.0.11", "10.96.0.12", 30080
LOCAL_VIP, LOCAL_NODE_PORT = "10.96.0.13", 30081
N1, N2 = NODE_IPS["n1"], NODE_IPS["n2"]
CONNECTIONS = 30


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    require_root()
    require_binaries("ip", "busybox", "iptables-nft-restore", "iptables-legacy-restore", "nsenter")
    lab = Lab(new_prefix())
    try:
        lab.up()
        # Same-node pod -> ClusterIP needs bridged traffic to pass through iptables.
        require(lab.bridge_nf("n1") != "", "br_netfilter: /proc/sys/net/bridge missing in the node namespace")
        lab.exec("n1", "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1")
        yield lab
    finally:
        lab.down()
    assert lab.leftovers() == []


def web_service() -> t.Service:
    s = t.Service(metadata=t.ObjectMeta(name="web", namespace="default"),
                  spec=t.ServiceSpec(cluster_ip=VIP, type="NodePort"))
    s.spec.ports.add(name="http", port=80, node_port=NODE_PORT).target_port.str_val = "http"
    return s


def web_endpoints(*pods: str, not_ready: tuple[str, ...] = ()) -> t.Endpoints:
    e = t.Endpoints(metadata=t.ObjectMeta(name="web", namespace="default"))
    sub = e.subsets.add()
    sub.addresses.extend(t.EndpointAddress(ip=PODS[p][1]) for p in pods)
    sub.not_ready_addresses.extend(t.EndpointAddress(ip=PODS[p][1]) for p in not_ready)
    sub.ports.add(name="http", port=POD_PORT)
    return e


def empty_service() -> t.Service:
    s = t.Service(metadata=t.ObjectMeta(name="empty", namespace="default"), spec=t.ServiceSpec(cluster_ip=EMPTY_VIP))
    s.spec.ports.add(port=80)
    return s


def sticky_service() -> tuple[t.Service, t.Endpoints]:
    s = t.Service(metadata=t.ObjectMeta(name="sticky", namespace="default"),
                  spec=t.ServiceSpec(cluster_ip=STICKY_VIP, session_affinity="ClientIP"))
    s.spec.ports.add(port=80).target_port.int_val = POD_PORT
    e = web_endpoints("p1", "p3")
    e.metadata.name = "sticky"
    e.subsets[0].ports[0].name = ""
    return s, e


def local_service() -> tuple[t.Service, t.Endpoints]:
    """Both traffic policies Local, endpoints p1 (on n1, this netproxy's node) and p3 (on n2)."""
    s = t.Service(metadata=t.ObjectMeta(name="local", namespace="default"),
                  spec=t.ServiceSpec(cluster_ip=LOCAL_VIP, type="NodePort", external_traffic_policy="Local",
                                     internal_traffic_policy="Local"))
    s.spec.ports.add(port=80, node_port=LOCAL_NODE_PORT).target_port.int_val = POD_PORT
    e = t.Endpoints(metadata=t.ObjectMeta(name="local", namespace="default"))
    sub = e.subsets.add()
    sub.addresses.extend(t.EndpointAddress(ip=PODS[p][1], node_name=PODS[p][0]) for p in ("p1", "p3"))
    sub.ports.add(port=POD_PORT)
    return s, e


def web_chains(*pods: str) -> set[str]:
    sp = ServicePort("default", "web", "http", "TCP", VIP, 80)
    return {svc_chain(sp)} | {sep_chain(sp, Endpoint(PODS[p][1], POD_PORT)) for p in pods}


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running(api: InProcessApi, lab: Lab, backend: str) -> AsyncIterator[NetProxy]:
    proxier = IptablesProxier(IptablesCmd(backend, netns=lab.ns("n1")), ProxyConfig(cluster_cidr="10.244.0.0/16"))
    proxy = NetProxy(api, proxier, node_name="n1", min_sync_period=0.0, sync_period=30.0)
    task = asyncio.ensure_future(proxy.run())
    try:
        await asyncio.wait_for(proxy.synced.wait(), 30)
        yield proxy
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def reach(lab: Lab, host: str, address: str, port: int) -> dict[str, int]:
    return await asyncio.to_thread(lab.connect, host, address, port, CONNECTIONS)


@pytest.mark.parametrize("backend", ["nft", "legacy"])
async def test_services_through_real_iptables(lab: Lab, backend: str) -> None:
    async with InProcessApi() as api:
        await scenario(api, lab, backend)


async def scenario(api: InProcessApi, lab: Lab, backend: str) -> None:
    node = t.Node(metadata=t.ObjectMeta(name="n1"))
    node.status.addresses.add(type="InternalIP", address=N1)
    await api.create(node)
    await api.create(web_service())
    await api.create(web_endpoints("p1", "p3", not_ready=("p2",)))
    await api.create(empty_service())
    for obj in sticky_service():
        await api.create(obj)
    for obj in local_service():
        await api.create(obj)

    async def saved() -> str:
        return await asyncio.to_thread(lab.save, "n1", backend)

    async with running(api, lab, backend) as proxy:
        # 1. ClusterIP, two endpoints on two nodes; the not-ready pod never answers.
        for client in ("n1", "p1", "p2"):
            got = await reach(lab, client, VIP, 80)
            assert set(got) == {"p1", "p3"}, f"{client} -> ClusterIP: {got}"
        # 2. NodePort from the other node, and from the node itself.
        for client in ("n2", "n1"):
            got = await reach(lab, client, N1, NODE_PORT)
            assert set(got) == {"p1", "p3"}, f"{client} -> NodePort: {got}"
        # ClientIP affinity: every connection of one client lands on the same pod.
        got = await reach(lab, "p2", STICKY_VIP, 80)
        assert len(got) == 1 and set(got) <= {"p1", "p3"}, f"ClientIP affinity: {got}"
        # 3. No endpoints: refused at once (REJECT), not a timeout.
        got = await asyncio.to_thread(lab.connect, "p2", EMPTY_VIP, 80, 3)
        assert got == {"ERR:ConnectionRefusedError": 3}, got
        assert web_chains("p1", "p3") <= set((await saved()).split())
        # Traffic policies Local: the NodePort from the other node and the ClusterIP from a pod
        # reach only n1's endpoint (p1), never p3 on n2.
        got = await reach(lab, "n2", N1, LOCAL_NODE_PORT)
        assert got == {"p1": CONNECTIONS}, f"externalTrafficPolicy Local: {got}"
        got = await reach(lab, "p2", LOCAL_VIP, 80)
        assert got == {"p1": CONNECTIONS}, f"internalTrafficPolicy Local: {got}"

        # 4. An endpoint change reaches new connections.
        before = proxy.metrics.programming_latency.n
        await api.update(web_endpoints("p2", "p3"))
        await eventually(lambda: asyncio.sleep(0, proxy.metrics.programming_latency.n > before),
                         "the endpoint change to be applied")
        got = await reach(lab, "p1", VIP, 80)
        assert set(got) == {"p2", "p3"}, f"after the endpoint change: {got}"
        assert proxy.metrics.programming_latency.recent[-1] < 10

        # 5. Deleting the Service removes every chain it had.
        await api.delete(t.Endpoints, "web", "default")
        await api.delete(t.Service, "web", "default")

        async def web_gone() -> bool:
            text = await saved()
            return "default/web" not in text and not web_chains("p2", "p3") & set(text.split())
        await eventually(web_gone, "the web chains to be deleted")

        await api.create(web_service())
        await api.create(web_endpoints("p1", "p3"))

        async def web_back() -> bool:
            return web_chains("p1", "p3") <= set((await saved()).split())
        await eventually(web_back, "the web chains to come back")

    # 6. netproxy is down: rules stay, Services keep working; changes wait for the restart.
    got = await reach(lab, "n1", VIP, 80)
    assert set(got) == {"p1", "p3"}, f"while netproxy is down: {got}"
    await api.update(web_endpoints("p2"))
    await api.delete(t.Service, "empty", "default")
    async with running(api, lab, backend) as proxy:
        got = await reach(lab, "n1", VIP, 80)
        assert got == {"p2": CONNECTIONS}, f"after restart: {got}"
        text = await saved()
        assert EMPTY_VIP not in text
        assert not web_chains("p1", "p3") - web_chains("p2") & set(text.split()), "stale chains after restart"
    # 7. `python -m netproxy --cleanup`, run in the node, leaves nothing of netproxy's.
    out = await asyncio.to_thread(subprocess.run, ["nsenter", f"--net={lab.netns_path('n1')}", sys.executable, "-m",
                                                   "netproxy", "--cleanup"],
                                  capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert f"iptables-{backend}: removed" in out.stdout
    text = await saved()
    assert "KUBE-" not in text, text
    got = await asyncio.to_thread(lab.connect, "n1", VIP, 80, 1)
    assert "p2" not in got  # no DNAT any more

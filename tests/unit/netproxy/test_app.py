"""netproxy wired to the api-server in this process: informers -> runner -> proxier, metrics, CLI."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from controlplane.apiserver.inprocess import InProcessApi
from netproxy.__main__ import main
from netproxy.app import TRIGGER_ANNOTATION, ChangeTracker, NetProxy, trigger_time
from netproxy.config import ProxyConfig
from netproxy.iptables.command import BackendRules, MemoryIptables, choose_backend, count_rules
from netproxy.iptables.proxier import IptablesProxier
from netproxy.ipvs.kernel import MemoryIpvs
from netproxy.ipvs.proxier import IpvsProxier
from netproxy.metrics import Metrics
from netproxy.proxier import Snapshot, SyncResult
from skiff import metrics as skiff_metrics
from skiffpb.api.v1 import types_pb2 as t
from tests.unit.netproxy.objects import eps, port, subset, svc

CFG = ProxyConfig(cluster_cidr="10.244.0.0/16")


@contextlib.asynccontextmanager
async def running(proxy: NetProxy) -> AsyncIterator[NetProxy]:
    task = asyncio.ensure_future(proxy.run())
    try:
        await asyncio.wait_for(proxy.synced.wait(), 10)
        yield proxy
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(cond, what: str, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    try:
        async with asyncio.timeout(timeout):
            while not cond():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def test_changes_flow_from_the_api_to_the_rules(api: InProcessApi) -> None:
    ipt = MemoryIptables()
    await api.create(svc("web", "10.96.0.10", port(80)))
    await api.create(eps("web", subset(["10.244.1.2"], [("", 8080)])))
    proxy = NetProxy(api, IptablesProxier(ipt, CFG), min_sync_period=0.0)
    async with running(proxy):
        nat = await ipt.save("nat")
        assert "--to-destination 10.244.1.2:8080" in nat
        assert proxy.metrics.programming_latency.n == 0  # the initial list is not a change

        await api.update(eps("web", subset(["10.244.2.2"], [("", 8080)])))
        await until(lambda: proxy.metrics.programming_latency.n == 1, "the endpoint change")
        nat = await ipt.save("nat")
        assert "10.244.2.2:8080" in nat and "10.244.1.2" not in nat
        assert 0 <= proxy.metrics.programming_latency.recent[0] < 5

        await api.create(svc("api", "10.96.0.1", port(443)))
        await until(lambda: "10.96.0.1/32" in "".join(ipt.chains[("filter", "KUBE-SERVICES")]), "a new service")
        await api.delete(t.Service, "web", "default")
        await until(lambda: not any("default/web" in r for rules in ipt.chains.values() for r in rules),
                    "the deleted service's rules to go")
        text = proxy.metrics.render()
        assert 'netproxy_syncs_total{kind="full",result="ok"} 1.0' in text
        assert "kubeproxy_network_programming_duration_seconds_count 1.0" in text
        assert 'kubeproxy_sync_proxy_rules_iptables_total{table="nat"}' in text


async def test_min_sync_period_merges_a_burst(api: InProcessApi) -> None:
    ipt = MemoryIptables()
    proxy = NetProxy(api, IptablesProxier(ipt, CFG), min_sync_period=0.5)
    async with running(proxy):
        syncs = proxy.runner.syncs
        for i in range(20):
            await api.create(svc(f"s{i}", f"10.96.0.{i + 1}", port(80)))
        await until(lambda: sum("10.96.0." in r for r in ipt.chains[("filter", "KUBE-SERVICES")]) == 20, "20 services")
        await asyncio.sleep(0.6)
        assert proxy.runner.syncs - syncs <= 2  # 20 creates, at most two syncs


async def test_trigger_annotation_is_the_start_of_programming_latency() -> None:
    e = eps("web")
    assert trigger_time(e) is None
    e.metadata.annotations[TRIGGER_ANNOTATION] = "2026-01-02T03:04:05.5Z"
    assert trigger_time(e) == pytest.approx(1767323045.5)
    e.metadata.annotations[TRIGGER_ANNOTATION] = "garbage"
    assert trigger_time(e) is None
    tracker = ChangeTracker(clock=lambda: 100.0)
    tracker.changed("default/web", 90.0)
    tracker.changed("default/web")  # a later change keeps the earliest trigger
    taken = tracker.take()
    assert taken == {"default/web": 90.0} and tracker.pending == {}
    tracker.give_back(taken)
    assert tracker.pending == {"default/web": 90.0}


async def test_ipvs_mode_follows_the_node_addresses(api: InProcessApi) -> None:
    kernel = MemoryIpvs()
    node = t.Node(metadata=t.ObjectMeta(name="n1"))
    node.status.addresses.add(type="InternalIP", address="10.77.0.11")
    await api.create(node)
    await api.create(t.Node(metadata=t.ObjectMeta(name="n2")))
    await api.create(svc("web", "10.96.0.10", port(80, node_port=30080), type="NodePort"))
    proxy = NetProxy(api, IpvsProxier(kernel, MemoryIptables(), CFG), node_name="n1", min_sync_period=0.0)
    async with running(proxy):
        assert ("10.77.0.11", "TCP", 30080) in kernel.state.services
        node.status.addresses.add(type="ExternalIP", address="192.0.2.5")
        await api.update_status(node)
        await until(lambda: ("192.0.2.5", "TCP", 30080) in kernel.state.services, "the new node address")


async def test_metrics_endpoint_serves_text_and_health() -> None:
    metrics = Metrics(mode="iptables", backend="nft")
    served = await skiff_metrics.serve("127.0.0.1:0", metrics.health(120.0), registry=metrics.registry)
    assert served is not None

    async def get(path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{served.port}{path}") as r:
            return r.status, await r.text()

    try:
        assert (await get("/healthz"))[0] == 500  # no sync yet
        metrics.sync_duration.observe(0.02)
        metrics.last_sync.set(metrics.clock())
        status, body = await get("/metrics")
        assert status == 200
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(body) for s in family.samples}
        assert samples[("kubeproxy_sync_proxy_rules_duration_seconds_bucket", (("le", "0.025"),))] == 1
        assert samples[("netproxy_info", (("backend", "nft"), ("mode", "iptables")))] == 1
        assert (await get("/healthz")) == (200, "ok")
        assert (await get("/nope"))[0] == 404
    finally:
        await served.close()


@pytest.mark.parametrize(("argv", "message"), [
    (["--cluster-cidr", "10.244.0.0/99"], "cluster_cidr"),
    (["--cluster-cidr", "fd00::/64"], "IPv6"),
    (["--nodeport-addresses", "nonsense"], "nodeport_addresses"),
], ids=["bad-cidr", "ipv6-cidr", "bad-nodeport-address"])
def test_bad_flags_fail_clearly_before_touching_anything(argv: list[str], message: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 1
    assert message in capsys.readouterr().err


def test_bad_duration_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--min-sync-period", "soon"])
    assert "not a duration" in capsys.readouterr().err


BACKENDS = [
    ("kube-rules-decide", BackendRules(10, 0), BackendRules(3, 3), "iptables v1.8.9 (nf_tables)", "legacy"),
    ("more-rules-decide", BackendRules(12, 0), BackendRules(2, 0), "iptables v1.8.9 (legacy)", "nft"),
    ("version-breaks-tie-legacy", BackendRules(0, 0), BackendRules(0, 0), "iptables v1.8.9 (legacy)", "legacy"),
    ("version-breaks-tie-nft", BackendRules(0, 0), BackendRules(0, 0), "iptables v1.8.9 (nf_tables)", "nft"),
    ("nothing-known-nft", BackendRules(0, 0), BackendRules(0, 0), "", "nft"),
]


@pytest.mark.parametrize(("nft", "legacy", "version", "expected"), [b[1:] for b in BACKENDS],
                         ids=[b[0] for b in BACKENDS])
def test_choose_backend(nft: BackendRules, legacy: BackendRules, version: str, expected: str) -> None:
    assert choose_backend(nft, legacy, version) == expected


def test_count_rules() -> None:
    text = "*nat\n:KUBE-SERVICES - [0:0]\n-A PREROUTING -j KUBE-SERVICES\n-A POSTROUTING -j MASQUERADE\nCOMMIT\n"
    assert count_rules(text) == BackendRules(2, 1)


class _BlockingProxier(IptablesProxier):
    """An iptables proxier whose syncs after the first wait until released (a slow restore)."""

    def __init__(self) -> None:
        super().__init__(MemoryIptables(), CFG)
        self.syncing = asyncio.Event()
        self.release = asyncio.Event()
        self.syncs = 0

    async def sync(self, snapshot: Snapshot, *, full: bool = False) -> SyncResult:
        self.syncs += 1
        if self.syncs > 1:
            self.syncing.set()
            await self.release.wait()
        return await super().sync(snapshot, full=full)


@pytest.mark.parametrize("when", ["during-a-sync", "as-events-come"])
async def test_run_stops_promptly_when_cancelled(api: InProcessApi, when: str) -> None:
    """NetProxy.run ends within a second of its cancellation: in the middle of a sync, and while
    Service events keep requesting syncs (each a wake-up racing the cancellation)."""
    await api.create(svc("web", "10.96.0.10", port(80)))
    proxier = _BlockingProxier()
    if when == "as-events-come":
        proxier.release.set()
    proxy = NetProxy(api, proxier, min_sync_period=0.0)
    task = asyncio.ensure_future(proxy.run())
    await asyncio.wait_for(proxy.synced.wait(), 10)
    if when == "during-a-sync":
        await api.create(svc("api", "10.96.0.1", port(443)))
        await asyncio.wait_for(proxier.syncing.wait(), 10)
        task.cancel()
    else:
        for i in range(20):
            proxy.runner.request()
            await asyncio.sleep(0)
            if i == 10:
                task.cancel()
    done, _ = await asyncio.wait([task], timeout=3)
    assert done and task.cancelled(), "NetProxy.run still running 3 s after cancel"

"""Endpoints controller: subsets from pods (pure), and syncs over the in-process api-server."""

from __future__ import annotations

import pytest

from controlplane.controllers.endpoints import EndpointsController, plan_subsets, resolve_target_port
from skiff.clock import stamp
from skiffpb.api.v1 import types_pb2 as t
from tests.unit.controlplane.harness import Cluster, pod


def service(*, selector: dict[str, str] | None = None, ports: tuple[tuple[str, int, int | str | None], ...] = (
        ("http", 80, "web"),)) -> t.Service:
    svc = t.Service(api_version="v1", kind="Service")
    svc.metadata.name, svc.metadata.namespace = "web", "default"
    svc.metadata.labels["team"] = "a"
    svc.spec.selector.update({"app": "web"} if selector is None else selector)
    for name, port, target in ports:
        sp = svc.spec.ports.add(name=name, port=port, protocol="TCP")
        if isinstance(target, int):
            sp.target_port.int_val = target
        elif isinstance(target, str):
            sp.target_port.str_val = target
    return svc


def web_pod(name: str, ip: str, *, ready: bool = True, port: int = 8080, node: str = "n1") -> t.Pod:
    p = pod(name, node=node, ip=ip, ready=ready, phase="Running", labels={"app": "web"})
    p.metadata.uid = f"uid-{name}"
    p.spec.containers[0].ports.add(name="web", container_port=port)
    return p


def test_target_port_resolution() -> None:
    p = web_pod("a", "10.0.0.1", port=9000)
    assert resolve_target_port(t.ServicePort(port=80), p) == 80
    assert resolve_target_port(t.ServicePort(port=80, target_port=t.IntOrString(int_val=81)), p) == 81
    assert resolve_target_port(t.ServicePort(port=80, target_port=t.IntOrString(str_val="web")), p) == 9000
    assert resolve_target_port(t.ServicePort(port=80, target_port=t.IntOrString(str_val="nope")), p) is None
    udp = t.ServicePort(port=80, protocol="UDP", target_port=t.IntOrString(str_val="web"))
    assert resolve_target_port(udp, p) is None


def test_subsets_group_by_resolved_ports_and_split_readiness() -> None:
    gone = web_pod("gone", "10.0.0.9")
    stamp(gone.metadata.deletion_timestamp, 1.0)
    finished = web_pod("finished", "10.0.0.8")
    finished.status.phase = "Succeeded"
    pods = [web_pod("b", "10.0.0.2"), web_pod("a", "10.0.0.10"), web_pod("c", "10.0.0.3", ready=False),
            web_pod("other-port", "10.0.0.4", port=9090), web_pod("no-ip", ""), gone, finished]
    subsets = plan_subsets(service(), pods)
    assert [(s.ports[0].port, [a.ip for a in s.addresses], [a.ip for a in s.not_ready_addresses])
            for s in subsets] == [(8080, ["10.0.0.2", "10.0.0.10"], ["10.0.0.3"]), (9090, ["10.0.0.4"], [])]
    addr = subsets[0].addresses[0]
    assert (addr.node_name, addr.target_ref.kind, addr.target_ref.name, addr.target_ref.uid) == (
        "n1", "Pod", "b", "uid-b")


@pytest.mark.parametrize(("publish", "ready", "not_ready"), [
    (False, ["10.0.0.2"], ["10.0.0.3"]),
    (True, ["10.0.0.2", "10.0.0.3"], []),
], ids=["default", "publish-not-ready"])
def test_publish_not_ready_addresses(publish: bool, ready: list[str], not_ready: list[str]) -> None:
    svc = service()
    svc.spec.publish_not_ready_addresses = publish
    [subset] = plan_subsets(svc, [web_pod("b", "10.0.0.2"), web_pod("c", "10.0.0.3", ready=False)])
    assert ([a.ip for a in subset.addresses], [a.ip for a in subset.not_ready_addresses]) == (ready, not_ready)


@pytest.mark.parametrize(("hostname", "subdomain", "want"), [
    ("db-0", "web", "db-0"),
    ("db-0", "other", ""),
    ("", "web", ""),
], ids=["subdomain-is-service", "other-subdomain", "no-hostname"])
def test_endpoint_hostname_from_pod_hostname_and_subdomain(hostname: str, subdomain: str, want: str) -> None:
    p = web_pod("a", "10.0.0.2")
    p.spec.hostname, p.spec.subdomain = hostname, subdomain
    [subset] = plan_subsets(service(), [p])
    assert subset.addresses[0].hostname == want


def test_pod_without_the_named_port_keeps_the_other_ports() -> None:
    svc = service(ports=(("http", 80, "web"), ("metrics", 9100, 9100)))
    p = pod("bare", ip="10.0.0.5", ready=True, phase="Running", labels={"app": "web"})
    [subset] = plan_subsets(svc, [p])
    assert [(pt.name, pt.port) for pt in subset.ports] == [("metrics", 9100)]


async def test_sync_follows_readiness_and_service_lifecycle(cluster: Cluster) -> None:
    ctrl = EndpointsController(cluster.api, cluster.factory)
    await cluster.create(service())
    await cluster.create(web_pod("a", "10.0.0.1", ready=False))
    await cluster.start()
    await cluster.drain(ctrl)
    ep = await cluster.api.get(t.Endpoints, "web")
    assert dict(ep.metadata.labels) == {"team": "a"}
    assert [a.ip for a in ep.subsets[0].not_ready_addresses] == ["10.0.0.1"] and not ep.subsets[0].addresses
    p = await cluster.api.get(t.Pod, "a")
    p.status.conditions[0].status = "True"
    await cluster.api.update_status(p)
    await cluster.drain(ctrl)
    ep = await cluster.api.get(t.Endpoints, "web")
    assert [a.ip for a in ep.subsets[0].addresses] == ["10.0.0.1"]
    writes = cluster.writes("update", "endpoints")
    ctrl.queue.add("default/web")
    await cluster.drain(ctrl)
    assert cluster.writes("update", "endpoints") == writes, "no change, no write"
    await cluster.api.delete(t.Pod, "a")
    await cluster.drain(ctrl)
    assert not (await cluster.api.get(t.Endpoints, "web")).subsets
    await cluster.api.delete(t.Service, "web")
    await cluster.drain(ctrl)
    assert cluster.api.objects(t.Endpoints) == []


async def test_service_without_selector_is_left_alone(cluster: Cluster) -> None:
    ctrl = EndpointsController(cluster.api, cluster.factory)
    await cluster.create(service(selector={}))
    manual = t.Endpoints(api_version="v1", kind="Endpoints")
    manual.metadata.name, manual.metadata.namespace = "web", "default"
    manual.subsets.add().addresses.add(ip="192.0.2.1")
    await cluster.create(manual)
    await cluster.start()
    ctrl.queue.add("default/web")
    await cluster.drain(ctrl)
    assert cluster.writes("update", "endpoints") == 0
    assert cluster.api.objects(t.Endpoints)[0].subsets[0].addresses[0].ip == "192.0.2.1"


@pytest.mark.parametrize(("period", "writes_after_adds", "writes_after_removal"), [
    (0.0, 3, 4),
    (5.0, 1, 2),
], ids=["every-change", "batched"])
async def test_updates_batched_per_service_but_removals_at_once(
        cluster: Cluster, period: float, writes_after_adds: int, writes_after_removal: int) -> None:
    """The first pod becoming ready is written at once, the next ones wait for the period's end
    together; a ready pod going away is written at once, carrying what was held."""
    ctrl = EndpointsController(cluster.api, cluster.factory, batch_period=period)
    mono = [1000.0]
    ctrl.batches.clock = lambda: mono[0]
    await cluster.create(service())
    await cluster.create(web_pod("a", "10.0.0.1"))
    for name, ip in (("b", "10.0.0.2"), ("c", "10.0.0.3"), ("d", "10.0.0.4")):
        await cluster.create(web_pod(name, ip, ready=False))
    await cluster.start()
    await cluster.drain(ctrl)
    assert [a.ip for a in (await cluster.api.get(t.Endpoints, "web")).subsets[0].addresses] == ["10.0.0.1"]
    base = cluster.writes("update", "endpoints")
    for name in ("b", "c", "d"):
        p = await cluster.api.get(t.Pod, name)
        p.status.conditions[0].status = "True"
        await cluster.api.update_status(p)
        await cluster.drain(ctrl)
        mono[0] += 0.1
    assert cluster.writes("update", "endpoints") - base == writes_after_adds
    await cluster.api.delete(t.Pod, "a")
    await cluster.drain(ctrl)
    assert cluster.writes("update", "endpoints") - base == writes_after_removal
    ep = await cluster.api.get(t.Endpoints, "web")
    assert [a.ip for a in ep.subsets[0].addresses] == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    ctrl.shutdown()

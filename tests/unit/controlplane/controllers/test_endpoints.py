"""Endpoints controller: subsets from pods (pure), and syncs over the in-process api-server."""

from __future__ import annotations

from collections.abc import Mapping

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


# Which pods each Service selects, read through the label indexes: pairs shared by other pods,
# a pair of a pod in another namespace, several pairs, a pair no pod has.
SELECTION_PODS = [  # (name, namespace, labels)
    ("web-1", "default", {"app": "web", "tier": "front"}),
    ("web-2", "default", {"app": "web", "tier": "back"}),
    ("db-1", "default", {"app": "db", "tier": "back"}),
    ("bare", "default", {}),
    ("web-elsewhere", "other", {"app": "web", "tier": "front"}),
]
SELECTION_SERVICES = [  # (name, namespace, selector, the pods it selects)
    ("web", "default", {"app": "web"}, ["web-1", "web-2"]),
    ("web-front", "default", {"app": "web", "tier": "front"}, ["web-1"]),
    ("back", "default", {"tier": "back"}, ["db-1", "web-2"]),
    ("cache", "default", {"app": "cache"}, []),
    ("web", "other", {"app": "web"}, ["web-elsewhere"]),
]


def selection_pod(name: str, namespace: str, pod_labels: dict[str, str], ip: str) -> t.Pod:
    p = pod(name, ns=namespace, node="n1", ip=ip, ready=True, phase="Running", labels=pod_labels)
    p.metadata.uid = f"uid-{namespace}-{name}"
    return p


def selection_service(name: str, namespace: str, selector: dict[str, str]) -> t.Service:
    svc = service(selector=selector, ports=(("http", 80, 8080),))
    svc.metadata.name, svc.metadata.namespace = name, namespace
    return svc


async def test_each_service_gets_exactly_the_pods_its_selector_matches(cluster: Cluster) -> None:
    ctrl = EndpointsController(cluster.api, cluster.factory)
    await cluster.create(t.Namespace(api_version="v1", kind="Namespace", metadata=t.ObjectMeta(name="other")))
    for i, (name, ns, pod_labels) in enumerate(SELECTION_PODS):
        await cluster.create(selection_pod(name, ns, pod_labels, f"10.0.0.{i + 1}"))
    for name, ns, selector, _ in SELECTION_SERVICES:
        await cluster.create(selection_service(name, ns, selector))
    await cluster.start()
    await cluster.drain(ctrl)
    for name, ns, _, want in SELECTION_SERVICES:
        ep = await cluster.api.get(t.Endpoints, name, ns)
        got = sorted(a.target_ref.name for s in ep.subsets for a in s.addresses)
        assert got == want, f"{ns}/{name}"
    for name, ns, _ in SELECTION_PODS:
        p = cluster.factory.informer(t.Pod).get(name, ns)
        assert p is not None
        got = sorted(f"{s.metadata.namespace}/{s.metadata.name}" for s in ctrl._services_for(p))
        want = sorted(f"{s_ns}/{s_name}" for s_name, s_ns, _, pods in SELECTION_SERVICES
                      if s_ns == ns and name in pods)
        assert got == want, f"services of {ns}/{name}"

    # A relabelled pod leaves one Service's Endpoints and joins another's.
    moved = await cluster.api.get(t.Pod, "db-1")
    moved.metadata.labels["app"] = "web"
    await cluster.api.update(moved)
    await cluster.drain(ctrl)
    web = await cluster.api.get(t.Endpoints, "web")
    assert sorted(a.target_ref.name for s in web.subsets for a in s.addresses) == ["db-1", "web-1", "web-2"]


async def test_a_sync_reads_only_the_pods_sharing_the_selectors_rarest_label(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    # The cost of a sync (and of a pod event) follows the Service's pods, not the namespace's:
    # 200 pods of other apps share the namespace, and 30 of them share a pair with the selector.
    from skiff import labels

    ctrl = EndpointsController(cluster.api, cluster.factory)
    for i in range(200):
        other_labels = {"app": f"other-{i % 7}", "tier": "back" if i < 30 else "front"}
        await cluster.create(selection_pod(f"other-{i}", "default", other_labels, f"10.1.0.{i + 1}"))
    for i in range(3):
        await cluster.create(selection_pod(f"db-{i}", "default", {"app": "db", "tier": "back"}, f"10.2.0.{i + 1}"))
    await cluster.create(selection_service("db", "default", {"app": "db", "tier": "back"}))
    await cluster.start()
    await cluster.drain(ctrl)
    matched: list[dict[str, str]] = []
    real_matches = labels.matches

    def counting(selector: labels.Selector, pod_labels: Mapping[str, str]) -> bool:
        matched.append(dict(pod_labels))
        return real_matches(selector, pod_labels)

    monkeypatch.setattr(labels, "matches", counting)
    ctrl.queue.add("default/db")
    await cluster.drain(ctrl)
    assert len(matched) == 3 and all(m["app"] == "db" for m in matched)
    ep = await cluster.api.get(t.Endpoints, "db")
    assert sorted(a.target_ref.name for s in ep.subsets for a in s.addresses) == ["db-0", "db-1", "db-2"]
    matched.clear()
    pods = cluster.factory.informer(t.Pod)
    assert ctrl._services_for(pods.get("other-50", "default")) == []
    assert matched == []  # no Service's selector has app=other-1 or tier=front: none was matched
    assert ctrl._services_for(pods.get("other-5", "default")) == []
    assert len(matched) == 1  # tier=back: the db Service was a candidate, matched once

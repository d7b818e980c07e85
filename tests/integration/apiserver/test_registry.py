"""The registry's verbs against each storage backend (in-memory and a real etcd).

Table tests for create (defaults, validation, stamping), then the semantics that matter to
controllers: optimistic concurrency, generation, status/spec separation, deletion with
grace periods, finalizers and propagation policies, binding, namespaces, allocation.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from google.protobuf.message import Message

from controlplane.apiserver import strategy
from controlplane.apiserver.memstore import MemoryStore
from controlplane.apiserver.registry import COMPACT_KEY, Registry
from controlplane.apiserver.storage import KV, CompactedError, Store
from skiff import errors
from skiffpb.api.v1 import apiserver_pb2 as api
from skiffpb.api.v1 import types_pb2 as t
from tests.integration.apiserver.conftest import make_registry, options
from tests.support.builders import deployment, namespace, pod, service

pytestmark = pytest.mark.integration


def _huge_pod() -> t.Pod:
    p = pod("huge")
    p.spec.containers[0].env.add(name="BLOB", value="x" * (2 * 1024 * 1024))
    return p


def _probe_pod() -> t.Pod:
    p = pod("probed")
    p.spec.containers[0].readiness_probe.http_get.port.int_val = 8080
    return p


def _with(obj: Message, change: Callable[[Message], None]) -> Message:
    change(obj)
    return obj


@dataclass(frozen=True)
class CreateCase:
    id: str
    obj: Callable[[], Message]
    check: Callable[[Message], object] | None = None
    error: type[errors.SkiffError] | None = None
    message: str = ""
    namespace: str = ""


def _external(name: str) -> Callable[[Message], None]:
    def change(s: Message) -> None:
        s.spec.type, s.spec.external_name = "ExternalName", name  # type: ignore[attr-defined]
    return change


def _ip_in(cidr: str) -> Callable[[Message], bool]:
    return lambda s: ipaddress.ip_address(s.spec.cluster_ip) in ipaddress.ip_network(cidr)  # type: ignore[attr-defined]


CREATE_CASES = [
    CreateCase("pod-defaults", lambda: pod("web", image="nginx"), lambda p: (
        p.spec.restart_policy == "Always" and p.spec.termination_grace_period_seconds == 30
        and p.spec.containers[0].image_pull_policy == "Always" and p.status.phase == "Pending"
        and p.metadata.namespace == "default" and p.metadata.generation == 1 and p.metadata.uid
        and p.metadata.creation_timestamp.seconds > 0 and p.metadata.resource_version)),
    CreateCase("pull-policy-by-tag", lambda: pod("tagged", image="nginx:1.25"),
               lambda p: p.spec.containers[0].image_pull_policy == "IfNotPresent"),
    CreateCase("pull-policy-latest", lambda: pod("latest", image="registry.local:5000/nginx:latest"),
               lambda p: p.spec.containers[0].image_pull_policy == "Always"),
    CreateCase("probe-defaults", _probe_pod, lambda p: (
        p.spec.containers[0].readiness_probe.timeout_seconds == 1
        and p.spec.containers[0].readiness_probe.period_seconds == 10
        and p.spec.containers[0].readiness_probe.success_threshold == 1
        and p.spec.containers[0].readiness_probe.failure_threshold == 3)),
    CreateCase("deployment-defaults", lambda: deployment("web"), lambda d: (
        d.spec.replicas == 1 and d.spec.strategy.type == "RollingUpdate"
        and d.spec.strategy.rolling_update.max_surge.str_val == "25%"
        and d.spec.strategy.rolling_update.max_unavailable.str_val == "25%"
        and d.spec.revision_history_limit == 10 and d.spec.progress_deadline_seconds == 600
        and d.spec.template.spec.restart_policy == "Always"
        and d.spec.template.spec.containers[0].ports[0].protocol == "TCP")),
    CreateCase("replicas-zero-kept", lambda: deployment("zero", replicas=0), lambda d: d.spec.replicas == 0),
    CreateCase("deployment-status-reset",
               lambda: _with(deployment("st"), lambda d: setattr(d.status, "replicas", 5)),  # type: ignore[attr-defined]
               lambda d: d.status.replicas == 0),
    CreateCase("service-defaults", lambda: service("web"), lambda s: (
        s.spec.type == "ClusterIP" and s.spec.session_affinity == "None"
        and s.spec.ports[0].protocol == "TCP" and s.spec.ports[0].target_port.int_val == 80
        and s.spec.cluster_ip != "10.96.0.1" and s.spec.cluster_ips == [s.spec.cluster_ip]
        and _ip_in("10.96.0.0/24")(s))),
    CreateCase("nodeport-allocated", lambda: service("np", type_="NodePort"),
               lambda s: 30000 <= s.spec.ports[0].node_port <= 30099 and s.spec.external_traffic_policy == "Cluster"),
    CreateCase("explicit-cluster-ip", lambda: service("fixed", cluster_ip="10.96.0.77"),
               lambda s: s.spec.cluster_ip == "10.96.0.77"),
    CreateCase("explicit-node-port", lambda: service("fixedport", type_="NodePort", node_port=30042),
               lambda s: s.spec.ports[0].node_port == 30042),
    CreateCase("headless", lambda: service("headless", cluster_ip="None"), lambda s: s.spec.cluster_ip == "None"),
    CreateCase("external-name", lambda: _with(service("ext", port=80), _external("db.example.com")),
               lambda s: s.spec.type == "ExternalName" and not s.spec.cluster_ip and not s.spec.cluster_ips),
    CreateCase("external-name-missing", lambda: _with(service("ext2"), _external("")),
               error=errors.InvalidError, message='spec.externalName: required when type is "ExternalName"'),
    CreateCase("external-name-with-cluster-ip", lambda: _with(service("ext3", cluster_ip="10.96.0.9"),
                                                              _external("db.example.com")),
               error=errors.InvalidError, message="spec.clusterIP: must be empty"),
    CreateCase("pod-dns-defaults", lambda: pod("dnsdef", image="nginx"), lambda p: (
        p.spec.dns_policy == "ClusterFirst" and p.spec.HasField("enable_service_links")
        and p.spec.enable_service_links)),
    CreateCase("dns-policy-none-needs-nameservers",
               lambda: _with(pod("dnsnone", image="nginx"), lambda p: setattr(p.spec, "dns_policy", "None")),
               error=errors.InvalidError, message="spec.dnsConfig.nameservers"),
    CreateCase("cluster-ip-outside-range", lambda: service("out", cluster_ip="10.97.0.5"),
               error=errors.InvalidError, message="not in the valid range"),
    CreateCase("node-port-outside-range", lambda: service("badport", type_="NodePort", node_port=80),
               error=errors.InvalidError, message="spec.ports[0].nodePort"),
    CreateCase("generate-name", lambda: _with(pod(""), lambda p: setattr(p.metadata, "generate_name", "web-")),
               lambda p: p.metadata.name.startswith("web-") and len(p.metadata.name) == 9
               and set(p.metadata.name[4:]) <= set(strategy.GENERATE_NAME_ALPHABET)),
    CreateCase("no-containers", lambda: _with(pod("empty"), lambda p: p.spec.ClearField("containers")),
               error=errors.InvalidError, message="spec.containers: at least one container is required"),
    CreateCase("bad-name", lambda: pod("Not_Valid"), error=errors.InvalidError, message="metadata.name"),
    CreateCase("missing-namespace", lambda: pod("lost", namespace="nope"), error=errors.NotFoundError,
               message='namespaces "nope" not found'),
    CreateCase("namespace-mismatch", lambda: pod("mm", namespace="default"), namespace="kube-system",
               error=errors.InvalidError, message="does not match"),
    CreateCase("resource-version-set", lambda: _with(pod("rv"), lambda p: setattr(p.metadata, "resource_version", "5")),
               error=errors.InvalidError, message="metadata.resourceVersion"),
    CreateCase("too-large", _huge_pod, error=errors.InvalidError, message="too large"),
    CreateCase("cluster-scoped-with-namespace",
               lambda: _with(namespace("x"), lambda n: setattr(n.metadata, "namespace", "default")),
               error=errors.InvalidError, message="not namespaced"),
    CreateCase("kind-mismatch", lambda: _with(pod("km"), lambda p: setattr(p, "kind", "Service")),
               error=errors.InvalidError, message="does not match"),
    CreateCase("namespace-phase", lambda: namespace("team-a"), lambda n: n.status.phase == "Active"),
]


@pytest.mark.parametrize("case", CREATE_CASES, ids=[c.id for c in CREATE_CASES])
async def test_create(registry: Registry, case: CreateCase) -> None:
    if case.error is not None:
        with pytest.raises(case.error) as info:
            await registry.create(case.obj(), namespace=case.namespace)
        assert case.message in str(info.value)
        return
    created = await registry.create(case.obj(), namespace=case.namespace)
    assert case.check is not None and case.check(created), created
    stored = await registry.get(type(created).__name__.lower() + "s" if not isinstance(created, t.Namespace)
                                else "namespaces", created.metadata.namespace, created.metadata.name)  # type: ignore[attr-defined]
    assert stored == created


async def test_create_existing_name(registry: Registry) -> None:
    await registry.create(pod("a"))
    with pytest.raises(errors.AlreadyExistsError, match='pods "a" already exists'):
        await registry.create(pod("a"))


async def test_generate_name_collision_tries_another_name(store: Store) -> None:
    # The suffixes a Random(3) draws, in order: the first is taken, so the second is used.
    draws = random.Random(3)
    first, second = ("".join(draws.choice(strategy.GENERATE_NAME_ALPHABET) for _ in range(5)) for _ in range(2))
    reg = Registry(store, rng=random.Random(3))
    await reg.start(background=False)
    try:
        await reg.create(pod(f"web-{first}"))
        created = await reg.create(_with(pod(""), lambda p: setattr(p.metadata, "generate_name", "web-")))
        assert created.metadata.name == f"web-{second}"  # type: ignore[attr-defined]
    finally:
        await reg.stop()


async def test_system_namespaces_exist(registry: Registry) -> None:
    names, _, _ = await registry.list("namespaces")
    assert {"default", "kube-system"} <= {n.metadata.name for n in names}  # type: ignore[attr-defined]


async def test_update_semantics(registry: Registry) -> None:
    created = await registry.create(deployment("web", replicas=2))
    assert isinstance(created, t.Deployment)
    # Metadata-only change: no generation bump.
    labelled = t.Deployment()
    labelled.CopyFrom(created)
    labelled.metadata.labels["tier"] = "front"
    labelled.status.replicas = 99  # ignored by Update
    after_labels = await registry.update(labelled)
    assert isinstance(after_labels, t.Deployment)
    assert after_labels.metadata.generation == 1 and after_labels.status.replicas == 0
    assert int(after_labels.metadata.resource_version) > int(created.metadata.resource_version)
    # Spec change: generation + 1.
    scaled = t.Deployment()
    scaled.CopyFrom(after_labels)
    scaled.spec.replicas = 3
    after_scale = await registry.update(scaled)
    assert isinstance(after_scale, t.Deployment)
    assert after_scale.metadata.generation == 2
    assert after_scale.metadata.uid == created.metadata.uid
    assert after_scale.metadata.creation_timestamp == created.metadata.creation_timestamp
    # UpdateStatus ignores spec.
    status = t.Deployment()
    status.CopyFrom(after_scale)
    status.spec.replicas = 7
    status.status.replicas = 3
    status.status.observed_generation = 2
    after_status = await registry.update_status(status)
    assert isinstance(after_status, t.Deployment)
    assert after_status.spec.replicas == 3 and after_status.status.replicas == 3
    assert after_status.metadata.generation == 2
    # A stale resourceVersion is a conflict.
    with pytest.raises(errors.ConflictError, match="conflict"):
        await registry.update(scaled)
    # An update that changes nothing writes nothing.
    same = await registry.update(after_status)
    assert same.metadata.resource_version == after_status.metadata.resource_version  # type: ignore[attr-defined]
    # Without a resourceVersion the update is unconditional.
    blind = t.Deployment()
    blind.CopyFrom(after_status)
    blind.metadata.resource_version = ""
    blind.spec.replicas = 4
    assert (await registry.update(blind)).spec.replicas == 4  # type: ignore[attr-defined]


@pytest.mark.parametrize("change,message", [
    (lambda p: setattr(p.spec, "restart_policy", "Never"), "pod updates may not change"),
    (lambda p: setattr(p.spec, "node_name", "n9"), "spec.nodeName"),
], ids=["restart-policy", "node-name"])
async def test_pod_spec_is_immutable(registry: Registry, change: Callable[[t.Pod], None], message: str) -> None:
    created = await registry.create(pod("p"))
    assert isinstance(created, t.Pod)
    image = t.Pod()
    image.CopyFrom(created)
    image.spec.containers[0].image = "busybox:1.37"
    updated = await registry.update(image)
    assert isinstance(updated, t.Pod)
    change(updated)
    with pytest.raises(errors.InvalidError, match=message):
        await registry.update(updated)


async def test_two_concurrent_updates_one_wins(registry: Registry) -> None:
    created = await registry.create(deployment("race", replicas=1))
    assert isinstance(created, t.Deployment)
    a, b = t.Deployment(), t.Deployment()
    a.CopyFrom(created)
    b.CopyFrom(created)
    a.spec.replicas, b.spec.replicas = 2, 3
    results = await asyncio.gather(registry.update(a), registry.update(b), return_exceptions=True)
    wins = [r for r in results if isinstance(r, t.Deployment)]
    losses = [r for r in results if isinstance(r, errors.ConflictError)]
    assert len(wins) == 1 and len(losses) == 1, results
    stored = await registry.get("deployments", "default", "race")
    assert stored.spec.replicas == wins[0].spec.replicas  # type: ignore[attr-defined]


async def test_service_update_keeps_allocations_and_clusterip_is_immutable(registry: Registry) -> None:
    created = await registry.create(service("np", type_="NodePort"))
    assert isinstance(created, t.Service)
    ip, node_port = created.spec.cluster_ip, created.spec.ports[0].node_port
    resent = service("np", type_="NodePort")  # as `apply` sends it: no clusterIP, no nodePort
    resent.metadata.resource_version = created.metadata.resource_version
    kept = await registry.update(resent)
    assert isinstance(kept, t.Service)
    assert (kept.spec.cluster_ip, kept.spec.ports[0].node_port) == (ip, node_port)
    assert kept.metadata.resource_version == created.metadata.resource_version  # nothing changed
    moved = t.Service()
    moved.CopyFrom(kept)
    moved.spec.cluster_ip = "10.96.0.200" if ip != "10.96.0.200" else "10.96.0.201"
    with pytest.raises(errors.InvalidError, match="immutable"):
        await registry.update(moved)
    # NodePort -> ClusterIP releases the port for others.
    plain = t.Service()
    plain.CopyFrom(kept)
    plain.spec.type = "ClusterIP"
    plain.spec.ports[0].node_port = 0
    await registry.update(plain)
    again = await registry.create(service("other", type_="NodePort", node_port=node_port))
    assert again.spec.ports[0].node_port == node_port  # type: ignore[attr-defined]


async def test_cluster_ip_released_on_delete_and_never_shared(registry: Registry) -> None:
    await registry.create(service("one", cluster_ip="10.96.0.50"))
    with pytest.raises(errors.InvalidError, match="already allocated"):
        await registry.create(service("two", cluster_ip="10.96.0.50"))
    await registry.delete("services", "default", "one")
    again = await registry.create(service("two", cluster_ip="10.96.0.50"))
    assert again.spec.cluster_ip == "10.96.0.50"  # type: ignore[attr-defined]


async def test_concurrent_service_creates_get_distinct_ips(store: Store) -> None:
    # A /26 leaves 61 automatic addresses: 50 racing creates collide often and must retry.
    reg_a = await make_registry(store, cidr="10.96.0.0/26")
    reg_b = await make_registry(store, cidr="10.96.0.0/26")  # a second api-server on the same store
    try:
        creates = [(reg_a if i % 2 else reg_b).create(service(f"svc-{i}")) for i in range(50)]
        created = await asyncio.gather(*creates)
        ips = [s.spec.cluster_ip for s in created]  # type: ignore[attr-defined]
        assert len(set(ips)) == 50
        # Fill the range, then the next one is refused clearly.
        await asyncio.gather(*(reg_a.create(service(f"fill-{i}")) for i in range(11)))
        with pytest.raises(errors.TooManyRequestsError, match="no ClusterIP left"):
            await reg_a.create(service("one-too-many"))
    finally:
        await reg_a.stop()
        await reg_b.stop()


async def test_graceful_pod_deletion(registry: Registry) -> None:
    await registry.create(pod("unbound"))
    gone = await registry.delete("pods", "default", "unbound")
    assert not gone.metadata.HasField("deletion_timestamp")  # type: ignore[attr-defined]
    with pytest.raises(errors.NotFoundError):
        await registry.get("pods", "default", "unbound")

    await registry.create(pod("bound"))
    await registry.bind(t.Binding(metadata=t.ObjectMeta(name="bound", namespace="default"),
                                  target=t.ObjectReference(kind="Node", name="n1")))
    marked = await registry.delete("pods", "default", "bound")
    assert isinstance(marked, t.Pod)
    assert marked.metadata.deletion_grace_period_seconds == 30
    assert marked.metadata.deletion_timestamp.seconds - marked.metadata.creation_timestamp.seconds >= 29
    assert marked.metadata.generation == 2
    shorter = await registry.delete("pods", "default", "bound", grace_period=5)
    assert shorter.metadata.deletion_grace_period_seconds == 5  # type: ignore[attr-defined]
    await registry.delete("pods", "default", "bound", grace_period=0)  # the node agent's final delete
    with pytest.raises(errors.NotFoundError):
        await registry.get("pods", "default", "bound")


async def test_finalizers_and_propagation(registry: Registry) -> None:
    created = await registry.create(deployment("fg"))
    marked = await registry.delete("deployments", "default", "fg", propagation_policy="Foreground")
    assert list(marked.metadata.finalizers) == ["foregroundDeletion"]  # type: ignore[attr-defined]
    assert marked.metadata.HasField("deletion_timestamp")  # type: ignore[attr-defined]
    # Adding a finalizer while deleting is refused; removing the last one removes the object.
    adding = t.Deployment()
    adding.CopyFrom(marked)
    adding.metadata.finalizers.append("example.com/hold")
    with pytest.raises(errors.InvalidError, match="no new finalizers"):
        await registry.update(adding)
    done = t.Deployment()
    done.CopyFrom(marked)
    del done.metadata.finalizers[:]
    await registry.update(done)
    with pytest.raises(errors.NotFoundError):
        await registry.get("deployments", "default", "fg")
    assert created.metadata.uid  # type: ignore[attr-defined]

    await registry.create(deployment("orph"))
    orphaned = await registry.delete("deployments", "default", "orph", propagation_policy="Orphan")
    assert list(orphaned.metadata.finalizers) == ["orphan"]  # type: ignore[attr-defined]
    with pytest.raises(errors.InvalidError, match="propagationPolicy"):
        await registry.delete("deployments", "default", "orph", propagation_policy="Sideways")


async def test_delete_preconditions(registry: Registry) -> None:
    await registry.create(pod("pre"))
    with pytest.raises(errors.ConflictError, match="precondition"):
        await registry.delete("pods", "default", "pre", preconditions=api.Preconditions(uid="other"))
    await registry.delete("pods", "default", "pre")


async def test_bind(registry: Registry) -> None:
    created = await registry.create(pod("b"))
    binding = t.Binding(metadata=t.ObjectMeta(name="b", namespace="default", uid=created.metadata.uid),  # type: ignore[attr-defined]
                        target=t.ObjectReference(kind="Node", name="n1"))
    bound = await registry.bind(binding)
    assert bound.spec.node_name == "n1"
    assert [(c.type, c.status) for c in bound.status.conditions] == [("PodScheduled", "True")]
    with pytest.raises(errors.PodAlreadyAssignedError, match='already assigned to node "n1"'):
        await registry.bind(binding)
    with pytest.raises(errors.NotFoundError):
        await registry.bind(t.Binding(metadata=t.ObjectMeta(name="ghost", namespace="default"),
                                      target=t.ObjectReference(name="n1")))


async def test_namespace_deletion(registry: Registry) -> None:
    await registry.create(namespace("team"))
    await registry.create(pod("p", namespace="team"))
    await registry.create(service("s", namespace="team"))
    with pytest.raises(errors.ForbiddenError, match="protected"):
        await registry.delete("namespaces", "", "default")
    marked = await registry.delete("namespaces", "", "team")
    assert marked.status.phase == "Terminating"  # type: ignore[attr-defined]
    with pytest.raises(errors.ForbiddenError, match="being terminated"):
        await registry.create(pod("late", namespace="team"))
    for _ in range(100):
        try:
            await registry.get("namespaces", "", "team")
        except errors.NotFoundError:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("namespace was not removed")
    items, _, _ = await registry.list("services", namespace="team")
    assert items == []


async def test_list_selectors_and_pages(registry: Registry) -> None:
    for i in range(7):
        await registry.create(pod(f"p{i}", app="web" if i % 2 else "db"))
    web, rv, _ = await registry.list("pods", label_selector="app=web")
    assert [p.metadata.name for p in web] == ["p1", "p3", "p5"]  # type: ignore[attr-defined]
    assert int(rv) > 0
    named, _, _ = await registry.list("pods", field_selector="metadata.name=p4")
    assert [p.metadata.name for p in named] == ["p4"]  # type: ignore[attr-defined]
    with pytest.raises(errors.InvalidError, match="not supported"):
        await registry.list("pods", field_selector="spec.bogus=1")
    with pytest.raises(errors.InvalidError, match="invalid label selector"):
        await registry.list("pods", label_selector="app in (")
    pages: list[str] = []
    token = ""
    while True:
        items, _, token = await registry.list("pods", limit=3, continue_token=token)
        pages.append(",".join(p.metadata.name for p in items))  # type: ignore[attr-defined]
        if not token:
            break
    assert pages == ["p0,p1,p2", "p3,p4,p5", "p6"]


async def test_unknown_resource(registry: Registry) -> None:
    with pytest.raises(errors.InvalidError, match='unknown resource "widgets"'):
        await registry.get("widgets", "default", "x")


async def test_compaction_cuts_history_one_interval_back_once_across_api_servers(store: Store) -> None:
    # Two api-servers on one store, their compactors driven by hand (one call per interval).
    a, b = (Registry(store, options=options()) for _ in range(2))
    for reg in (a, b):
        await reg.start(background=False)
    try:
        await a.create(pod("x"))
        seen = await a.compact_once(0)  # the first interval only notes the revision
        await store.range("/registry/", revision=seen - 1)  # nothing compacted yet
        await a.create(pod("y"))
        assert await a.compact_once(seen) > seen
        with pytest.raises(CompactedError):
            await store.range("/registry/", revision=seen - 1)
        await store.range("/registry/", revision=seen)  # history from one interval back is kept
        marker = await store.get(COMPACT_KEY)
        assert marker is not None and int(marker.value) == seen
        await b.compact_once(seen)  # the other api-server, same interval: already done, no second write
        again = await store.get(COMPACT_KEY)
        assert again is not None and again.mod_revision == marker.mod_revision
    finally:
        for reg in (a, b):
            await reg.stop()


# ------------------------------------------------------------------ writes decided on the watch cache's copy

POD_KEY = "/registry/pods/default/w"


async def _cached(registry: Registry, revision: str) -> t.Pod:
    """The watch cache's copy of pod w once it shows `revision`."""
    for _ in range(200):
        obj = registry.caches["pods"].objects.get(POD_KEY)
        if obj is not None and obj.metadata.resource_version == revision:  # type: ignore[attr-defined]
            assert isinstance(obj, t.Pod)
            return obj
        await asyncio.sleep(0.01)
    raise AssertionError(f"the watch cache never showed pod w at revision {revision}")


def _binding(node: str, uid: str = "") -> t.Binding:
    return t.Binding(metadata=t.ObjectMeta(name="w", namespace="default", uid=uid),
                     target=t.ObjectReference(kind="Node", name=node))


async def _label(registry: Registry, p: t.Pod) -> t.Pod:
    p = strategy.copy(p)
    p.metadata.labels["changed"] = "yes"
    out = await registry.update(p)
    assert isinstance(out, t.Pod)
    return out


async def _bind_n2(registry: Registry, p: t.Pod) -> t.Pod:
    return await registry.bind(_binding("n2"))


async def _running(registry: Registry, p: t.Pod) -> t.Pod:
    p = strategy.copy(p)
    p.status.phase = "Running"
    out = await registry.update_status(p)
    assert isinstance(out, t.Pod)
    return out


async def _delete(registry: Registry, p: t.Pod) -> None:
    await registry.delete("pods", "default", "w", grace_period=0)


async def _recreate(registry: Registry, p: t.Pod) -> t.Pod:
    """Pod w deleted and created again: same name and key, another uid."""
    await _delete(registry, p)
    out = await registry.create(pod("w"))
    assert isinstance(out, t.Pod) and out.metadata.uid != p.metadata.uid
    return out


async def _act_bind(registry: Registry, stale: t.Pod, fresh: t.Pod | None) -> Message:
    return await registry.bind(_binding("n1", stale.metadata.uid))


async def _act_status_pending(registry: Registry, stale: t.Pod, fresh: t.Pod | None) -> Message:
    """The stale copy's own status written back: "unchanged" on the copy, a change in the store."""
    p = strategy.copy(stale)
    p.metadata.resource_version = ""
    return await registry.update_status(p)


async def _act_status_running(registry: Registry, stale: t.Pod, fresh: t.Pod | None) -> Message:
    p = strategy.copy(stale)
    p.metadata.resource_version = ""  # no precondition: the write goes on top of whatever is stored
    return await _running(registry, p)


async def _act_status_running_of_the_copy(registry: Registry, stale: t.Pod, fresh: t.Pod | None) -> Message:
    """The stale copy's uid kept as a precondition (no resourceVersion)."""
    p = strategy.copy(stale)
    p.metadata.resource_version = ""
    return await _running(registry, p)


async def _act_update_at_the_copys_rv(registry: Registry, stale: t.Pod, fresh: t.Pod | None) -> Message:
    p = strategy.copy(stale)  # resourceVersion of the copy: the store has moved on, a conflict
    p.metadata.annotations["a"] = "b"
    return await registry.update(p)


async def _act_update_at_fresh_rv(registry: Registry, stale: t.Pod, fresh: t.Pod | None) -> Message:
    assert fresh is not None
    p = strategy.copy(fresh)
    p.metadata.annotations["a"] = "b"
    return await registry.update(p)


@dataclass(frozen=True)
class StaleCase:
    id: str
    change: Callable[[Registry, t.Pod], Any]  # what the store saw after the copy the cache keeps (None: deleted)
    act: Callable[[Registry, t.Pod, t.Pod | None], Any]  # (registry, stale copy, fresh object)
    check: Callable[[t.Pod], bool] | None = None  # the stored pod after the act
    error: type[errors.SkiffError] | None = None


STALE_CASES = [
    StaleCase("bind-keeps-a-later-change", _label, _act_bind,
              check=lambda p: p.spec.node_name == "n1" and p.metadata.labels["changed"] == "yes"),
    StaleCase("bind-refused-only-by-the-store", _bind_n2, _act_bind, error=errors.PodAlreadyAssignedError),
    StaleCase("status-unchanged-on-the-copy-is-written", _running, _act_status_pending,
              check=lambda p: p.status.phase == "Pending"),
    StaleCase("status-keeps-a-later-change", _label, _act_status_running,
              check=lambda p: p.metadata.labels["changed"] == "yes" and p.status.phase == "Running"),
    StaleCase("update-at-the-stores-revision-is-no-conflict", _label, _act_update_at_fresh_rv,
              check=lambda p: p.metadata.annotations["a"] == "b" and p.metadata.labels["changed"] == "yes"),
    StaleCase("update-at-the-copys-revision-conflicts", _label, _act_update_at_the_copys_rv,
              check=lambda p: "a" not in p.metadata.annotations and p.metadata.labels["changed"] == "yes",
              error=errors.ConflictError),
    StaleCase("bind-of-a-deleted-pod-not-found", _delete, _act_bind, error=errors.NotFoundError),
    StaleCase("status-of-a-deleted-pod-not-found", _delete, _act_status_running, error=errors.NotFoundError),
    StaleCase("bind-of-a-recreated-pod-refused-by-uid", _recreate, _act_bind,
              check=lambda p: p.spec.node_name == "", error=errors.ConflictError),
    StaleCase("status-of-a-recreated-pod-refused-by-uid", _recreate, _act_status_running_of_the_copy,
              check=lambda p: p.status.phase == "Pending", error=errors.ConflictError),
]


@pytest.mark.parametrize("case", STALE_CASES, ids=[c.id for c in STALE_CASES])
async def test_writes_on_a_stale_cache_copy_are_decided_by_the_store(registry: Registry, case: StaleCase) -> None:
    """Update, UpdateStatus and Bind try the watch cache's copy first; a copy older than the store
    must neither lose the later change, nor refuse, nor skip a write on its own say; nor write
    over a pod deleted or created again since (its compare fails, the store's state refuses)."""
    created = await registry.create(pod("w"))
    assert isinstance(created, t.Pod)
    stale = await _cached(registry, created.metadata.resource_version)
    fresh = await case.change(registry, created)
    if fresh is None:  # deleted: wait for the cache to follow, then put the stale copy back
        for _ in range(200):
            if POD_KEY not in registry.caches["pods"].objects:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the watch cache never followed the deletion of pod w")
    else:
        await _cached(registry, fresh.metadata.resource_version)  # followed: nothing will overwrite the stale copy
    # the cache lagging behind the store
    registry.caches["pods"].objects.put(POD_KEY, (stale.SerializeToString(), int(stale.metadata.resource_version)),
                                        stale)
    if case.error is not None:
        with pytest.raises(case.error):
            await case.act(registry, stale, fresh)
    else:
        assert fresh is not None
        out = await case.act(registry, stale, fresh)
        assert int(out.metadata.resource_version) > int(fresh.metadata.resource_version)
    if fresh is None:
        with pytest.raises(errors.NotFoundError):
            await registry.get("pods", "default", "w")
        return
    stored = await registry.get("pods", "default", "w")
    assert isinstance(stored, t.Pod)
    assert case.check is None or case.check(stored), stored


class CountingStore(MemoryStore):
    """The in-memory store, counting linearizable reads of one key."""

    def __init__(self) -> None:
        super().__init__(progress_interval=0.5)
        self.gets = 0

    async def get(self, key: str) -> KV | None:
        self.gets += 1
        return await super().get(key)


WRITES = [
    ("bind", lambda r, p: r.bind(_binding("n1", p.metadata.uid))),
    ("update-status", lambda r, p: _running(r, p)),
    ("update", lambda r, p: _label(r, p)),
]


@pytest.mark.parametrize("write", [w for _, w in WRITES], ids=[i for i, _ in WRITES])
async def test_writes_on_a_current_cache_copy_read_nothing_from_the_store(write: Any) -> None:
    store = CountingStore()
    registry = await make_registry(store)
    try:
        created = await registry.create(pod("w"))
        await _cached(registry, created.metadata.resource_version)  # type: ignore[attr-defined]
        before = store.gets
        out = await write(registry, created)
        assert store.gets == before  # one store round trip (the txn), not a read and a txn
        assert int(out.metadata.resource_version) > int(created.metadata.resource_version)  # type: ignore[attr-defined]
    finally:
        await registry.stop()

"""Pure parts of the api-server: defaults, delete planning, update rules, allocation picks."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from google.protobuf.message import Message

from controlplane.apiserver import strategy
from controlplane.apiserver.allocator import Allocator, allocation_keys, parse_port_range
from controlplane.apiserver.defaults import apply_defaults, default_tolerations, image_pull_policy
from controlplane.apiserver.filters import make_filter
from controlplane.apiserver.memstore import MemoryStore
from controlplane.apiserver.storage import Event, StoreError, prefix_end
from controlplane.apiserver.watchcache import WatchCache, watch_event
from skiff import errors, kinds
from skiffpb.api.v1 import types_pb2 as t
from tests.support.builders import deployment, pod, service


@pytest.mark.parametrize("image,policy", [
    ("nginx", "Always"),
    ("nginx:latest", "Always"),
    ("nginx:1.25", "IfNotPresent"),
    ("registry.local:5000/team/nginx", "Always"),
    ("registry.local:5000/team/nginx:1.2", "IfNotPresent"),
    ("nginx@sha256:abcd", "IfNotPresent"),
], ids=["no-tag", "latest", "tag", "registry-port-no-tag", "registry-port-tag", "digest"])
def test_image_pull_policy(image: str, policy: str) -> None:
    assert image_pull_policy(image) == policy


def test_defaults_are_idempotent_and_keep_given_values() -> None:
    d = deployment("web", replicas=0)
    d.spec.strategy.rolling_update.max_surge.int_val = 2
    apply_defaults(d)
    once = d.SerializeToString(deterministic=True)
    apply_defaults(d)
    assert d.SerializeToString(deterministic=True) == once
    assert d.spec.replicas == 0 and d.spec.strategy.rolling_update.max_surge.int_val == 2
    assert d.spec.strategy.rolling_update.max_unavailable.str_val == "25%"
    s = service("s", port=8080)
    s.spec.ports[0].target_port.str_val = "http"
    s.spec.session_affinity = "ClientIP"
    apply_defaults(s)
    assert s.spec.ports[0].target_port.str_val == "http"
    assert s.spec.session_affinity_config.client_ip.timeout_seconds == 10800


def _bound(grace: int | None = None, *, phase: str = "Running", finalizers: tuple[str, ...] = ()) -> t.Pod:
    p = pod("p", node="n1")
    p.metadata.finalizers.extend(finalizers)
    p.status.phase = phase
    if grace is not None:
        p.spec.termination_grace_period_seconds = grace
    return p


def _deleting(grace: int, *, finalizers: tuple[str, ...] = ()) -> t.Pod:
    p = _bound(finalizers=finalizers)
    p.metadata.deletion_timestamp.seconds = 1000 + grace
    p.metadata.deletion_grace_period_seconds = grace
    return p


@dataclass(frozen=True)
class DeleteCase:
    id: str
    obj: Callable[[], Message]
    action: str
    grace: int | None = None
    policy: str = ""
    finalizers: tuple[str, ...] = ()
    grace_after: int | None = None


DELETE_CASES = [
    DeleteCase("unbound-pod-at-once", lambda: pod("p"), "delete"),
    DeleteCase("bound-pod-graceful", lambda: _bound(), "update", grace_after=30),
    DeleteCase("bound-pod-own-grace", lambda: _bound(12), "update", grace_after=12),
    DeleteCase("bound-pod-requested-grace", lambda: _bound(), "update", grace=5, grace_after=5),
    DeleteCase("force", lambda: _bound(), "delete", grace=0),
    DeleteCase("negative-grace-is-one", lambda: _bound(), "update", grace=-5, grace_after=1),
    DeleteCase("finished-pod-at-once", lambda: _bound(phase="Succeeded"), "delete"),
    DeleteCase("shorten-grace", lambda: _deleting(30), "update", grace=3, grace_after=3),
    DeleteCase("no-longer-grace", lambda: _deleting(3), "none", grace=30),
    DeleteCase("final-delete", lambda: _deleting(30), "delete", grace=0),
    DeleteCase("final-delete-held-by-finalizer", lambda: _deleting(30, finalizers=("x/y",)), "update", grace=0,
               finalizers=("x/y",), grace_after=0),
    DeleteCase("deployment-background", lambda: deployment("d"), "delete"),
    DeleteCase("deployment-foreground", lambda: deployment("d"), "update", policy="Foreground",
               finalizers=("foregroundDeletion",), grace_after=0),
    DeleteCase("deployment-orphan", lambda: deployment("d"), "update", policy="Orphan", finalizers=("orphan",)),
]


@pytest.mark.parametrize("case", DELETE_CASES, ids=[c.id for c in DELETE_CASES])
def test_plan_delete(case: DeleteCase) -> None:
    plan = strategy.plan_delete(case.obj(), grace_period=case.grace, propagation_policy=case.policy, now=1000.0)
    assert plan.action == case.action
    if plan.action == "update":
        meta = plan.obj.metadata  # type: ignore[attr-defined]
        assert tuple(meta.finalizers) == case.finalizers
        assert meta.HasField("deletion_timestamp")
        if case.grace_after is not None:
            assert meta.deletion_grace_period_seconds == case.grace_after
            assert meta.deletion_timestamp.seconds == 1000 + case.grace_after


def test_plan_delete_rejects_unknown_policy() -> None:
    with pytest.raises(errors.InvalidError, match="propagationPolicy"):
        strategy.plan_delete(pod("p"), grace_period=None, propagation_policy="bogus", now=0)


def test_generation_counts_spec_changes_only() -> None:
    old = deployment("d", replicas=1)
    apply_defaults(old)
    old.metadata.generation = 4
    old.metadata.uid = "u1"
    same_spec = t.Deployment()
    same_spec.CopyFrom(old)
    same_spec.metadata.labels["x"] = "y"
    same_spec.metadata.uid = ""
    assert strategy.prepare_update(old, same_spec).metadata.generation == 4
    new_spec = t.Deployment()
    new_spec.CopyFrom(old)
    new_spec.spec.replicas = 3
    updated = strategy.prepare_update(old, new_spec)
    assert updated.metadata.generation == 5 and updated.metadata.uid == "u1"


def test_bind_plan() -> None:
    p = pod("p")
    p.metadata.uid = "u"
    binding = t.Binding(metadata=t.ObjectMeta(name="p", uid="u"), target=t.ObjectReference(name="n1"))
    bound = strategy.plan_bind(p, binding, now=50.0)
    assert bound.spec.node_name == "n1"
    assert bound.status.conditions[0].last_transition_time.seconds == 50
    with pytest.raises(errors.PodAlreadyAssignedError, match="already assigned"):
        strategy.plan_bind(bound, binding, now=51.0)
    with pytest.raises(errors.ConflictError, match="precondition") as info:
        strategy.plan_bind(p, t.Binding(metadata=t.ObjectMeta(uid="other"), target=t.ObjectReference(name="n")),
                           now=0)
    assert not isinstance(info.value, errors.PodAlreadyAssignedError), "a replaced pod is not a bound one"


def test_allocator_never_picks_reserved_or_taken_addresses() -> None:
    a = Allocator("10.0.0.0/29", "30000-30002", rng=random.Random(1))
    taken: set[str] = set()
    for _ in range(5):  # /29: .2 to .6 are pickable (.0 network, .1 reserved, .7 broadcast)
        ip = a.pick_ip(taken)
        assert ip is not None
        taken.add(ip)
    assert taken == {f"10.0.0.{i}" for i in range(2, 7)}
    assert a.pick_ip(taken) is None
    assert a.check_ip("10.0.0.1") is None  # the reserved one can be asked for explicitly
    assert "not in the valid range" in (a.check_ip("10.0.0.7") or "")
    assert "not in the valid range" in (a.check_ip("10.0.1.2") or "")
    ports = {a.pick_port(set()) for _ in range(50)}
    assert ports <= {30000, 30001, 30002}
    assert a.pick_port({30000, 30001, 30002}) is None


def test_allocation_keys() -> None:
    s = service("s", type_="NodePort", cluster_ip="10.0.0.3", node_port=30001)
    assert allocation_keys(s) == {"/registry/ranges/serviceips/10.0.0.3", "/registry/ranges/servicenodeports/30001"}
    assert allocation_keys(service("h", cluster_ip="None")) == set()


@pytest.mark.parametrize("text,ok", [("30000-32767", True), ("1-1", True), ("5-4", False), ("abc", False),
                                     ("0-10", False)], ids=["default", "single", "reversed", "junk", "zero"])
def test_parse_port_range(text: str, ok: bool) -> None:
    if ok:
        assert len(parse_port_range(text)) >= 1
    else:
        with pytest.raises(ValueError, match="invalid port range"):
            parse_port_range(text)


def test_prefix_end() -> None:
    assert prefix_end("/registry/pods/") == "/registry/pods0"
    assert "/registry/pods/default/x" < prefix_end("/registry/pods/") < "/registry/replicasets/"


NR, UR = "node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"


@pytest.mark.parametrize(("given", "want"), [
    ((), {(NR, "NoExecute", 300), (UR, "NoExecute", 30)}),
    ((t.Toleration(key=UR, operator="Exists", effect="NoExecute", toleration_seconds=5),),
     {(UR, "NoExecute", 5), (NR, "NoExecute", 300)}),
    ((t.Toleration(key=UR, operator="Exists"),), {(UR, "", 0), (NR, "NoExecute", 300)}),
    ((t.Toleration(operator="Exists"),), {("", "", 0)}),
    ((t.Toleration(operator="Exists", effect="NoExecute"),), {("", "NoExecute", 0)}),
    ((t.Toleration(key=UR, operator="Exists", effect="NoSchedule"),),
     {(UR, "NoSchedule", 0), (UR, "NoExecute", 30), (NR, "NoExecute", 300)}),
    ((t.Toleration(key="dedicated", operator="Exists"),),
     {("dedicated", "", 0), (UR, "NoExecute", 30), (NR, "NoExecute", 300)}),
], ids=["none", "own-unreachable-kept", "any-effect-counts", "tolerates-everything", "all-no-execute",
        "no-schedule-does-not-count", "other-key"])
def test_default_tolerations(given: tuple[t.Toleration, ...], want: set[tuple[str, str, int]]) -> None:
    """DefaultTolerationSeconds: added only where the pod tolerates neither taint already."""
    spec = t.PodSpec(tolerations=given)
    default_tolerations(spec, not_ready_seconds=300, unreachable_seconds=30)
    assert {(tn.key, tn.effect, tn.toleration_seconds) for tn in spec.tolerations} == want
    again = t.PodSpec()
    again.CopyFrom(spec)
    default_tolerations(again, not_ready_seconds=1, unreachable_seconds=1)
    assert again == spec, "applying it twice changes nothing"
def _stored(name: str, image: str) -> bytes:
    p = pod(name)
    p.spec.containers[0].image = image
    return p.SerializeToString()


@dataclass(frozen=True)
class WatchEventCase:
    id: str
    event: Event
    prev_image: str | None  # the object before the event, None: there was none
    expected: tuple[str, str, str] | None  # (type, image of obj, resourceVersion of obj), None: no event


WATCH_EVENT_CASES = [
    WatchEventCase("put-new-is-added", Event("PUT", "/registry/pods/default/a", _stored("a", "v2"), None, 7),
                   None, ("ADDED", "v2", "7")),
    WatchEventCase("put-existing-is-modified", Event("PUT", "/registry/pods/default/a", _stored("a", "v2"),
                                                     _stored("a", "v1"), 8), "v1", ("MODIFIED", "v2", "8")),
    WatchEventCase("delete-carries-last-state-at-delete-revision",
                   Event("DELETE", "/registry/pods/default/a", b"", _stored("a", "v1"), 9), "v1",
                   ("DELETED", "v1", "9")),
    WatchEventCase("delete-of-nothing-is-no-event", Event("DELETE", "/registry/pods/default/a", b"", None, 9),
                   None, None),
]


@pytest.mark.parametrize("case", WATCH_EVENT_CASES, ids=[c.id for c in WATCH_EVENT_CASES])
def test_watch_event(case: WatchEventCase) -> None:
    kind = kinds.by_kind("Pod")
    assert kind is not None
    prev = None
    if case.prev_image is not None:
        prev = t.Pod.FromString(_stored("a", case.prev_image))
        prev.metadata.resource_version = "3"
    got = watch_event(kind, case.event, prev)
    if case.expected is None:
        assert got is None
        return
    assert got is not None
    assert (got.type, got.obj.spec.containers[0].image, got.obj.metadata.resource_version) == case.expected  # type: ignore[attr-defined]
    assert got.prev is prev and got.revision == case.event.revision


def test_watch_event_refuses_a_value_that_is_not_the_kind() -> None:
    kind = kinds.by_kind("Pod")
    assert kind is not None
    with pytest.raises(StoreError, match="/registry/pods/default/x"):
        watch_event(kind, Event("PUT", "/registry/pods/default/x", b"\xff\xff\xff", None, 2), None)


def _on_node(name: str, node: str) -> bytes:
    p = pod(name)
    p.spec.node_name = node
    return p.SerializeToString()


@dataclass(frozen=True)
class CacheNodeCase:
    id: str
    events: tuple[Event, ...]
    node: str
    expected: tuple[str, ...]  # names the node's list holds


_A, _B = "/registry/pods/default/a", "/registry/pods/default/b"
CACHE_NODE_CASES = [
    CacheNodeCase("created-on-a-node", (Event("PUT", _A, _on_node("a", "n1"), None, 2),), "n1", ("a",)),
    CacheNodeCase("pending-is-on-no-node", (Event("PUT", _A, _on_node("a", ""), None, 2),), "", ("a",)),
    CacheNodeCase("bound-leaves-the-unassigned", (Event("PUT", _A, _on_node("a", ""), None, 2),
                                                  Event("PUT", _A, _on_node("a", "n1"), None, 3)), "", ()),
    CacheNodeCase("bound-joins-its-node", (Event("PUT", _A, _on_node("a", ""), None, 2),
                                           Event("PUT", _A, _on_node("a", "n1"), None, 3)), "n1", ("a",)),
    CacheNodeCase("deleted-leaves-its-node", (Event("PUT", _A, _on_node("a", "n1"), None, 2),
                                              Event("PUT", _B, _on_node("b", "n1"), None, 3),
                                              Event("DELETE", _A, b"", None, 4)), "n1", ("b",)),
    CacheNodeCase("other-nodes-pods-not-listed", (Event("PUT", _A, _on_node("a", "n1"), None, 2),
                                                  Event("PUT", _B, _on_node("b", "n2"), None, 3)), "n2", ("b",)),
]


@pytest.mark.parametrize("case", CACHE_NODE_CASES, ids=[c.id for c in CACHE_NODE_CASES])
def test_watch_cache_lists_a_nodes_pods_from_its_index(case: CacheNodeCase) -> None:
    """The watch cache keeps pods as stored bytes, indexed by node: a spec.nodeName list gives
    exactly that node's pods, decoded, at their revisions; the ring keeps no decoded object."""
    kind = kinds.by_kind("Pod")
    assert kind is not None
    cache = WatchCache(MemoryStore(), kind)
    for ev in case.events:
        cache._apply(ev)
    got = cache.snapshot(make_filter(kind, field_selector=f"spec.nodeName={case.node}"))
    assert tuple(p.metadata.name for p in got) == case.expected  # type: ignore[attr-defined]
    for p in got:
        key = f"/registry/pods/default/{p.metadata.name}"  # type: ignore[attr-defined]
        stored = cache.objects.raw(key)
        assert stored is not None and p.metadata.resource_version == str(stored[1])  # type: ignore[attr-defined]
    for ev in cache.events:
        assert ev._obj is None and ev._prev is None  # released once offered
        if ev.type != "DELETED" and ev.key in cache.objects and ev.revision == cache.objects.raw(ev.key)[1]:  # type: ignore[index]
            assert ev._stored is not None and ev._stored[0] is cache.objects.raw(ev.key)[0]  # type: ignore[index]
    # A released event decodes again on demand, as it was.
    last = cache.events[-1]
    assert last.obj.metadata.resource_version == str(last.revision)  # type: ignore[attr-defined]

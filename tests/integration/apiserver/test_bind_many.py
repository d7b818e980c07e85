"""Registry.bind_many on every store (in-memory, a real etcd, Skiff's own store): the bindings the
watch cache can plan commit in one store transaction, one revision; a conflict on one pod fails
exactly that pod; watches and lists stay exact when several pods share a revision.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import pytest

from controlplane.apiserver import strategy
from controlplane.apiserver.etcd import EtcdStore
from controlplane.apiserver.memstore import MemoryStore
from controlplane.apiserver.registry import Registry
from controlplane.apiserver.storage import Store
from controlplane.store.cluster import StoreCluster
from deploy.loopback import EtcdCluster
from skiff import errors
from skiffpb.api.v1 import types_pb2 as t
from tests.integration.apiserver.conftest import collect, summary, wipe
from tests.support.builders import pod
from tests.support.cluster import running_store

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def skiff_store() -> Iterator[StoreCluster]:
    with running_store(1) as cluster:
        yield cluster


# The conftest's `store`, with Skiff's own store as well: the shared revision is what each store makes of one txn.
@pytest.fixture(params=["memory", "etcd", "skiff"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore(progress_interval=0.5)
        return
    if request.param == "etcd":
        cluster: EtcdCluster = request.getfixturevalue("etcd")
        endpoints = cluster.endpoints
    else:
        skiff: StoreCluster = request.getfixturevalue("skiff_store")
        endpoints = [skiff.client(name) for name in skiff.members]
    store = EtcdStore(endpoints)
    await wipe(store)
    try:
        yield store
    finally:
        await store.close()


def binding(name: str, node: str, uid: str = "") -> t.Binding:
    return t.Binding(metadata=t.ObjectMeta(name=name, namespace="default", uid=uid),
                     target=t.ObjectReference(kind="Node", name=node))


async def created_and_cached(registry: Registry, names: list[str]) -> list[t.Pod]:
    out = []
    for name in names:
        p = await registry.create(pod(name))
        assert isinstance(p, t.Pod)
        out.append(p)
    await cached_at(registry, out[-1])
    return out


async def cached_at(registry: Registry, p: t.Pod) -> None:
    key = f"/registry/pods/default/{p.metadata.name}"
    for _ in range(300):
        raw = registry.caches["pods"].objects.raw(key)
        if raw is not None and raw[1] >= int(p.metadata.resource_version):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the watch cache never showed {p.metadata.name} at {p.metadata.resource_version}")


async def test_bindings_commit_in_one_transaction(registry: Registry) -> None:
    pods = await created_and_cached(registry, ["a", "b", "c", "d"])
    before = await registry.store.revision()
    out = await registry.bind_many([binding(p.metadata.name, f"n{i}", p.metadata.uid) for i, p in enumerate(pods)])
    assert all(isinstance(o, t.Pod) for o in out), out
    revisions = {o.metadata.resource_version for o in out}  # type: ignore[union-attr]
    assert revisions == {str(before + 1)}  # one transaction: one new revision for the four
    assert await registry.store.revision() == before + 1
    for i, p in enumerate(pods):
        stored = await registry.get("pods", "default", p.metadata.name)
        assert isinstance(stored, t.Pod)
        assert stored.spec.node_name == f"n{i}" and stored.metadata.resource_version == str(before + 1)
        assert any(c.type == "PodScheduled" and c.status == "True" for c in stored.status.conditions)


# ------------------------------------------------------------------ one binding in trouble

async def _bound_elsewhere(registry: Registry, p: t.Pod) -> None:
    await registry.bind(binding(p.metadata.name, "other"))


async def _deleted(registry: Registry, p: t.Pod) -> None:
    await registry.delete("pods", "default", p.metadata.name, grace_period=0)


async def _relabelled(registry: Registry, p: t.Pod) -> None:
    p = strategy.copy(p)
    p.metadata.labels["changed"] = "yes"
    await registry.update(p)


async def _recreated(registry: Registry, p: t.Pod) -> None:
    await _deleted(registry, p)
    await registry.create(pod(p.metadata.name))


@dataclass(frozen=True)
class Trouble:
    id: str
    # Done to pod b through the registry after the cache held it; the cache's copy of b is
    # then put back as it was (a cache lagging behind the store), so the group's compare fails.
    change: Callable[[Registry, t.Pod], Awaitable[None]] | None
    error: type[errors.SkiffError] | None  # b's outcome (None: bound to n1)
    uid: bool = True  # the binding names b's uid
    twice: bool = False  # b appears twice in the batch (the second is refused)


TROUBLES = [
    Trouble("stale-copy-bound-elsewhere", _bound_elsewhere, errors.PodAlreadyAssignedError),
    Trouble("stale-copy-deleted", _deleted, errors.NotFoundError),
    Trouble("stale-copy-relabelled-still-binds", _relabelled, None),
    Trouble("stale-copy-recreated-refused-by-uid", _recreated, errors.ConflictError),
    Trouble("uid-of-another-pod", None, errors.ConflictError, uid=False),
    Trouble("same-pod-twice", None, None, twice=True),
]


@pytest.mark.parametrize("case", TROUBLES, ids=[c.id for c in TROUBLES])
async def test_a_conflict_fails_only_its_own_binding(registry: Registry, case: Trouble) -> None:
    a, b, c = await created_and_cached(registry, ["a", "b", "c"])
    if case.change is not None:
        key = "/registry/pods/default/b"
        stale = registry.caches["pods"].objects.raw(key)
        assert stale is not None
        await case.change(registry, b)
        latest = await registry.store.revision()
        for _ in range(300):  # the cache followed the change: nothing overwrites the stale copy now
            if registry.caches["pods"].revision >= latest:
                break
            await asyncio.sleep(0.01)
        registry.caches["pods"].objects.put(key, stale, b)
    b_uid = b.metadata.uid if case.uid else "not-" + b.metadata.uid
    batch = [binding("a", "n0", a.metadata.uid), binding("b", "n1", b_uid), binding("c", "n2", c.metadata.uid)]
    if case.twice:
        batch.append(binding("b", "n3", b.metadata.uid))
    out = await registry.bind_many(batch)
    assert isinstance(out[0], t.Pod) and isinstance(out[2], t.Pod), out
    if case.error is None:
        assert isinstance(out[1], t.Pod) and out[1].spec.node_name == "n1", out[1]
    else:
        assert isinstance(out[1], case.error), out[1]
    if case.twice:
        assert isinstance(out[3], errors.PodAlreadyAssignedError), out[3]
    for name, node in (("a", "n0"), ("c", "n2")):
        stored = await registry.get("pods", "default", name)
        assert isinstance(stored, t.Pod) and stored.spec.node_name == node
    if case.id == "stale-copy-relabelled-still-binds":
        stored = await registry.get("pods", "default", "b")
        assert isinstance(stored, t.Pod) and stored.metadata.labels["changed"] == "yes" and \
            stored.spec.node_name == "n1"


# ------------------------------------------------------------------ watches at a shared revision

async def test_watches_and_lists_around_a_shared_revision(registry: Registry) -> None:
    pods = await created_and_cached(registry, ["a", "b", "c"])
    out = await registry.bind_many([binding(p.metadata.name, "n1", p.metadata.uid) for p in pods])
    shared = int(out[0].metadata.resource_version)  # type: ignore[union-attr]
    # From the revision before: all three, each once, in key order; nothing more.
    before = registry.watch("pods", resource_version=str(shared - 1))
    got = await collect(before, 3)
    assert summary(got) == [("MODIFIED", "a"), ("MODIFIED", "b"), ("MODIFIED", "c")]
    assert {e.object.pod.metadata.resource_version for e in got} == {str(shared)}
    await before.aclose()  # type: ignore[attr-defined]
    # From the shared revision (a client whose watch broke after one of them): the revision again,
    # then what came after it.
    after = registry.watch("pods", resource_version=str(shared))
    late = await registry.create(pod("d"))
    assert summary(await collect(after, 4)) == [("MODIFIED", "a"), ("MODIFIED", "b"), ("MODIFIED", "c"),
                                                ("ADDED", "d")]
    await after.aclose()  # type: ignore[attr-defined]
    # A consistent list holds all three bound (never some of them).
    items, rv, _ = await registry.list("pods")
    assert int(rv) >= int(late.metadata.resource_version)  # type: ignore[attr-defined]
    assert {p.metadata.name: p.spec.node_name for p in items} == {"a": "n1", "b": "n1", "c": "n1", "d": ""}

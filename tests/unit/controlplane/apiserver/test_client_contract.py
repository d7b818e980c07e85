"""The client contract: what a component sees through skiff.client.ApiClient.

Every test runs twice: against InProcessApi (the registry called in this process, what the
controller, scheduler, informer and agent unit tests use) and against skiff.client.Client
talking gRPC to an api-server service on loopback over the same kind of registry. Both must
pass the same checks, so a test passing on the in-process api-server says something about
the api-server components really talk to.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest

from controlplane.apiserver.allocator import Allocator
from controlplane.apiserver.authn import Authenticator
from controlplane.apiserver.forward import Forwarder
from controlplane.apiserver.inprocess import DEFAULT_OPTIONS, InProcessApi
from controlplane.apiserver.memstore import MemoryStore
from controlplane.apiserver.registry import Registry
from controlplane.apiserver.server import grpc_server
from skiff import errors
from skiff.client import Client, WatchEvent
from skiffpb.api.v1 import apiserver_pb2 as api
from skiffpb.api.v1 import types_pb2 as t
from tests.support.builders import node, pod, service


@pytest.fixture(params=["in-process", "grpc", "grpc-watch-per-event"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """grpc: watches come several events per message (WatchBatch); grpc-watch-per-event: the
    client watches as it does an api-server without WatchBatch (Watch, one event per message)."""
    if request.param == "in-process":
        async with InProcessApi() as in_process:
            yield in_process
        return
    registry = Registry(MemoryStore(), allocator=Allocator(), options=DEFAULT_OPTIONS)
    await registry.start()
    forwarder = Forwarder(registry)
    server = grpc_server(registry, forwarder, Authenticator(registry, insecure=True))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    remote = Client(f"127.0.0.1:{port}")
    if request.param == "grpc-watch-per-event":
        remote._endpoint(0).watch_batch = False
    try:
        yield remote
    finally:
        await remote.close()
        await server.stop(None)
        await registry.stop()
        await forwarder.close()


async def next_events(stream: AsyncIterator[WatchEvent[Any]], count: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    async with asyncio.timeout(5):
        while len(out) < count:
            ev = await anext(stream)
            out.append((ev.type, ev.obj.metadata.name))
    return out


async def test_create_stamps_defaults_and_refuses_a_duplicate(client: Any) -> None:
    created = await client.create(pod("a", app="web"))
    meta = created.metadata
    assert (meta.namespace, meta.generation) == ("default", 1)
    assert meta.uid and meta.resource_version and meta.creation_timestamp.seconds > 0
    assert (created.api_version, created.kind) == ("v1", "Pod")
    assert created.spec.restart_policy == "Always" and created.spec.scheduler_name == "default-scheduler"
    assert created.status.phase == "Pending"
    with pytest.raises(errors.AlreadyExistsError):
        await client.create(pod("a"))


async def test_invalid_objects_are_refused(client: Any) -> None:
    no_containers = pod("bad")
    del no_containers.spec.containers[:]
    with pytest.raises(errors.InvalidError, match="containers"):
        await client.create(no_containers)
    with pytest.raises(errors.NotFoundError, match="nowhere"):
        await client.create(pod("lost", namespace="nowhere"))


async def test_update_keeps_status_and_update_status_keeps_spec(client: Any) -> None:
    stale = await client.create(pod("a"))
    fresh = await client.get(t.Pod, "a")
    fresh.spec.containers[0].image = "busybox:1.37"
    fresh.status.phase = "Running"  # ignored by update
    updated = await client.update(fresh)
    assert updated.metadata.generation == 2 and updated.status.phase == "Pending"
    assert int(updated.metadata.resource_version) > int(stale.metadata.resource_version)
    with pytest.raises(errors.ConflictError):
        await client.update(stale)
    current = await client.get(t.Pod, "a")
    current.status.phase = "Running"
    current.spec.containers[0].image = "ignored:1"
    after = await client.update_status(current)
    assert (after.status.phase, after.spec.containers[0].image) == ("Running", "busybox:1.37")
    assert after.metadata.generation == 2


async def test_results_are_the_callers_own(client: Any) -> None:
    await client.create(pod("a"))
    listed = (await client.list(t.Pod, namespace="default")).items
    listed[0].metadata.labels["mutated"] = "yes"
    assert "mutated" not in (await client.list(t.Pod, namespace="default")).items[0].metadata.labels


@pytest.mark.parametrize(("selector", "fields", "namespace", "want"), [
    ("", "", "", ["a", "b", "c"]),
    ("", "", "default", ["a", "b"]),
    ("app=web", "", "", ["a", "c"]),
    ("app!=web", "", "", ["b"]),
    ("", "spec.nodeName=n1", "", ["b"]),
    ("app=web", "metadata.namespace=other", "", ["c"]),
], ids=["all", "namespace", "label", "label-not", "field", "label-and-field"])
async def test_list_selectors(client: Any, selector: str, fields: str, namespace: str, want: list[str]) -> None:
    await client.create(t.Namespace(metadata=t.ObjectMeta(name="other")))
    await client.create(pod("a", app="web"))
    await client.create(pod("b", app="db", node="n1"))
    await client.create(pod("c", namespace="other", app="web"))
    got = await client.list(t.Pod, namespace=namespace, label_selector=selector, field_selector=fields)
    assert sorted(p.metadata.name for p in got.items) == want
    assert int(got.resource_version) > 0


async def test_list_pages(client: Any) -> None:
    for i in range(5):
        await client.create(node(f"n{i}"))
    first = await client.list(t.Node, limit=2)
    assert [n.metadata.name for n in first.items] == ["n0", "n1"] and first.continue_token
    rest = await client.list(t.Node, limit=10, continue_token=first.continue_token)
    assert [n.metadata.name for n in rest.items] == ["n2", "n3", "n4"] and not rest.continue_token


async def test_delete_unbound_at_once_bound_gracefully(client: Any) -> None:
    await client.create(pod("free"))
    await client.create(pod("bound", node="n1"))
    await client.delete(t.Pod, "free")
    with pytest.raises(errors.NotFoundError):
        await client.get(t.Pod, "free")
    marked = await client.delete(t.Pod, "bound")
    assert marked.metadata.HasField("deletion_timestamp") and marked.metadata.deletion_grace_period_seconds == 30
    assert (await client.get(t.Pod, "bound")).metadata.HasField("deletion_timestamp")
    await client.delete(t.Pod, "bound", grace_period_seconds=0)  # the node agent confirms
    with pytest.raises(errors.NotFoundError):
        await client.get(t.Pod, "bound")


async def test_finalizers_hold_deletion_until_removed(client: Any) -> None:
    held = pod("a")
    held.metadata.finalizers.append("example.com/hold")
    await client.create(held)
    marked = await client.delete(t.Pod, "a")
    assert marked.metadata.HasField("deletion_timestamp")
    marked.metadata.ClearField("finalizers")
    await client.update(marked)
    with pytest.raises(errors.NotFoundError):
        await client.get(t.Pod, "a")


async def test_delete_preconditions(client: Any) -> None:
    await client.create(pod("a"))
    with pytest.raises(errors.ConflictError, match="precondition"):
        await client.delete(t.Pod, "a", preconditions=api.Preconditions(uid="someone-else"))
    with pytest.raises(errors.NotFoundError):
        await client.delete(t.Pod, "missing")


async def test_bind(client: Any) -> None:
    created = await client.create(pod("a"))
    with pytest.raises(errors.ConflictError) as replaced:
        await client.bind("default", "a", "n1", uid="another-uid")
    assert not isinstance(replaced.value, errors.PodAlreadyAssignedError)
    bound = await client.bind("default", "a", "n1", uid=created.metadata.uid)
    assert bound.spec.node_name == "n1"
    assert [(c.type, c.status) for c in bound.status.conditions] == [("PodScheduled", "True")]
    # The type, not the message, says "someone bound it first" (across gRPC too: a reason).
    with pytest.raises(errors.PodAlreadyAssignedError):
        await client.bind("default", "a", "n2")


async def test_generate_name(client: Any) -> None:
    template = pod("")
    template.metadata.generate_name = "web-"
    a, b = await client.create(template), await client.create(template)
    assert a.metadata.name.startswith("web-") and b.metadata.name.startswith("web-")
    assert a.metadata.name != b.metadata.name


async def test_watch_from_a_list_sees_every_later_change_in_order(client: Any) -> None:
    await client.create(pod("before"))
    rv = (await client.list(t.Pod)).resource_version
    stream = client.watch(t.Pod, resource_version=rv)
    a = await client.create(pod("a"))
    a.metadata.labels["x"] = "1"
    await client.update(a)
    await client.delete(t.Pod, "a")
    assert await next_events(stream, 3) == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
    await stream.aclose()


async def test_watch_selector_transitions_look_like_add_and_delete(client: Any) -> None:
    rv = (await client.list(t.Pod)).resource_version
    stream = client.watch(t.Pod, label_selector="app=web", resource_version=rv)
    p = await client.create(pod("p", app="db"))
    p.metadata.labels["app"] = "web"
    p = await client.update(p)
    p.metadata.labels["app"] = "db"
    await client.update(p)
    assert await next_events(stream, 2) == [("ADDED", "p"), ("DELETED", "p")]
    await stream.aclose()


async def test_watch_initial_events_end_with_a_bookmark(client: Any) -> None:
    await client.create(pod("x"))
    stream = client.watch(t.Pod, namespace="default", send_initial_events=True, allow_bookmarks=True)
    assert await next_events(stream, 2) == [("ADDED", "x"), ("BOOKMARK", "")]
    await client.create(pod("y"))
    assert await next_events(stream, 1) == [("ADDED", "y")]
    await stream.aclose()


async def test_watch_of_a_node_sees_its_pods_once_bound(client: Any) -> None:
    rv = (await client.list(t.Pod)).resource_version
    stream = client.watch(t.Pod, field_selector="spec.nodeName=n1", resource_version=rv)
    await client.create(pod("theirs"))
    await client.create(pod("mine"))
    await client.bind("default", "theirs", "n2")
    await client.bind("default", "mine", "n1")
    assert await next_events(stream, 1) == [("ADDED", "mine")]
    await stream.aclose()


async def test_service_gets_a_cluster_ip_from_the_range(client: Any) -> None:
    created = await client.create(service("web"))
    assert created.spec.cluster_ip.startswith("10.") and list(created.spec.cluster_ips) == [created.spec.cluster_ip]
    with pytest.raises(errors.InvalidError, match="clusterIP"):
        await client.create(service("elsewhere", cluster_ip="192.0.2.1"))


async def test_a_watch_falls_back_to_one_event_per_message_on_an_api_server_without_watch_batch() -> None:
    """An api-server older than WatchBatch answers it UNIMPLEMENTED: the client watches with
    Watch instead, from the same request, and keeps doing so on that endpoint."""
    requests: list[api.WatchRequest] = []

    async def watch(request: api.WatchRequest, context: Any) -> AsyncIterator[api.WatchEvent]:
        requests.append(request)
        yield api.WatchEvent(type="ADDED", object=t.Object(pod=pod("old", ns="default")))

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("skiff.api.v1.ApiServer", {
        "Watch": grpc.unary_stream_rpc_method_handler(watch, request_deserializer=api.WatchRequest.FromString,
                                                      response_serializer=api.WatchEvent.SerializeToString)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    remote = Client(f"127.0.0.1:{port}")
    try:
        for _ in range(2):
            stream = remote.watch(t.Pod, resource_version="42")
            assert await next_events(stream, 1) == [("ADDED", "old")]
            await stream.aclose()
        assert [r.resource_version for r in requests] == ["42", "42"]
        assert remote._endpoint(0).watch_batch is False
    finally:
        await remote.close()
        await server.stop(None)

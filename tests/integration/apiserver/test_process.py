"""The api-server as a process: startup errors, restarts, high availability, bad requests,
logs/exec forwarding. Real etcd, real api-server processes on loopback.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest

from deploy.loopback import apiserver_argv, control_plane, free_port, start_etcd
from skiff import errors, kinds
from skiff.client import Client
from skiff.informer import Informer
from skiffpb.api.v1 import apiserver_pb2 as api
from skiffpb.api.v1 import apiserver_pb2_grpc as api_grpc
from skiffpb.api.v1 import nodeagent_pb2_grpc
from skiffpb.api.v1 import types_pb2 as t
from tests.support.builders import node, pod, service

pytestmark = pytest.mark.integration


async def eventually(check, timeout: float = 20.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > end:
            raise AssertionError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.1)


def test_port_in_use_is_a_clear_startup_error(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        argv = apiserver_argv("127.0.0.1:1", port)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[3])
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr


@pytest.mark.parametrize(("flags", "message"), [
    (["--service-cidr", "10.96.0.0/33"], "invalid service CIDR"),
    # Every host has 127.0.0.1/8 on lo: a service CIDR inside it would hand out host addresses.
    (["--service-cidr", "127.0.0.0/16"],
     "service CIDR (--service-cidr) 127.0.0.0/16 overlaps host network on lo 127.0.0.0/8"),
], ids=["invalid-cidr", "overlaps-a-host-network"])
def test_bad_flags_are_clear(flags: list[str], message: str) -> None:
    argv = [sys.executable, "-m", "controlplane.apiserver", *flags]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[3])
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_waits_for_an_unreachable_store_then_serves(tmp_path: Path) -> None:
    store_port, api_port = free_port(), free_port()
    log = tmp_path / "apiserver.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(apiserver_argv(f"127.0.0.1:{store_port}", api_port), stdout=out,
                                stderr=subprocess.STDOUT, cwd=Path(__file__).parents[3],
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        end = time.monotonic() + 30
        while "unreachable" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < end, log.read_text()
            time.sleep(0.1)
        cluster = start_etcd(tmp_path, client_ports=[store_port])
        try:
            with grpc.insecure_channel(f"127.0.0.1:{api_port}") as channel:
                stub = api_grpc.ApiServerStub(channel)
                while True:
                    try:
                        stub.Version(api.VersionRequest(), timeout=1)
                        break
                    except grpc.RpcError:
                        assert time.monotonic() < end + 30, log.read_text()
                        time.sleep(0.2)
            text = log.read_text()
            assert text.count("unreachable") == 1, text  # one line per change of state, not per retry
        finally:
            cluster.stop()
    finally:
        proc.terminate()
        proc.wait(10)


async def test_watch_resumes_after_apiserver_restart(tmp_path: Path) -> None:
    """Events written while the watched api-server restarts arrive after it, once each, in order."""
    with control_plane(tmp_path, apiservers=2) as cp:
        watched, other = cp.apiservers
        writer = Client(other.endpoint)
        reader = Client(watched.endpoint, timeout=5)
        try:
            listed = await reader.list(t.Pod)
            rv = listed.resource_version
            seen: list[tuple[str, str]] = []
            written: list[str] = []

            async def watch_until(count: int) -> None:
                nonlocal rv
                while len(seen) < count:
                    try:
                        async for ev in reader.watch(t.Pod, resource_version=rv):
                            seen.append((ev.type, ev.obj.metadata.name))
                            rv = ev.obj.metadata.resource_version
                            if len(seen) >= count:
                                return
                    except errors.SkiffError:
                        await asyncio.sleep(0.2)  # the api-server is down: resume from rv

            watching = asyncio.ensure_future(watch_until(30))
            for i in range(10):
                written.append((await writer.create(pod(f"p{i}"))).metadata.name)
            await asyncio.sleep(0.5)
            watched.stop()
            for i in range(10, 20):
                written.append((await writer.create(pod(f"p{i}"))).metadata.name)
            watched.start()
            for i in range(20, 30):
                written.append((await writer.create(pod(f"p{i}"))).metadata.name)
            await asyncio.wait_for(watching, 60)
            assert seen == [("ADDED", name) for name in written]
        finally:
            await writer.close()
            await reader.close()


async def test_clients_carry_on_when_an_apiserver_and_its_store_member_die(tmp_path: Path) -> None:
    with control_plane(tmp_path, apiservers=3, store_members=3) as cp:
        client = Client(cp.apiserver_endpoints, timeout=30)
        informer = Informer(client, t.Pod)
        running = asyncio.ensure_future(informer.run())
        try:
            await informer.wait_synced(30)
            names = []
            for i in range(10):
                names.append((await client.create(pod(f"before-{i}"))).metadata.name)
            cp.apiservers[0].kill()
            cp.store.members[0].kill()
            for i in range(10):
                names.append((await client.create(pod(f"after-{i}"))).metadata.name)
            # Then the member the second api-server talks to first: it must fail over (watches too).
            cp.store.members[0].start()
            cp.store.members[1].kill()
            for i in range(10):
                names.append((await client.create(pod(f"later-{i}"))).metadata.name)
            listed = await client.list(t.Pod)
            assert sorted(p.metadata.name for p in listed.items) == sorted(names)
            await eventually(lambda: sorted(p.metadata.name for p in informer.list()) == sorted(names),
                             timeout=60, what="informer catching up")
            svc = await client.create(service("web"))
            assert svc.spec.cluster_ip
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            await client.close()


def _identity(data: bytes) -> bytes:
    return data


async def test_bad_requests_get_clear_errors_and_the_server_keeps_serving(tmp_path: Path) -> None:
    with control_plane(tmp_path) as cp:
        rng = random.Random(7)
        async with grpc.aio.insecure_channel(cp.apiserver_endpoints,
                                             options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
            methods = ["Create", "Get", "List", "Update", "UpdateStatus", "Delete", "Bind", "BindBatch", "Exec"]
            for method in methods:
                for size in (3, 50, 500):
                    junk = bytes([0xFF, 0xFF, 0xFF]) + rng.randbytes(size)
                    call = channel.unary_unary(f"/skiff.api.v1.ApiServer/{method}", request_serializer=_identity,
                                               response_deserializer=_identity)
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await call(junk, timeout=10)
                    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, info.value)
                    assert "not a valid skiff.api.v1." in (info.value.details() or "")
            stream = channel.unary_stream("/skiff.api.v1.ApiServer/Watch", request_serializer=_identity,
                                          response_deserializer=_identity)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in stream(b"\xff\xff\xff\x01", timeout=10):
                    pass
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

            stub = api_grpc.ApiServerStub(channel)
            cases: list[tuple[str, object, grpc.StatusCode, str]] = [
                ("Create", api.CreateRequest(), grpc.StatusCode.INVALID_ARGUMENT, "carries no object"),
                ("Get", api.GetRequest(resource="widgets", name="x"), grpc.StatusCode.INVALID_ARGUMENT,
                 "unknown resource"),
                ("Get", api.GetRequest(resource="pods", namespace="default", name="nope"), grpc.StatusCode.NOT_FOUND,
                 'pods "nope" not found'),
                ("Update", api.UpdateRequest(object=kinds.wrap(pod(""))), grpc.StatusCode.INVALID_ARGUMENT,
                 "metadata.name"),
                ("List", api.ListRequest(resource="pods", label_selector="a in ("), grpc.StatusCode.INVALID_ARGUMENT,
                 "label selector"),
                ("Delete", api.DeleteRequest(resource="pods", namespace="default", name="nope"),
                 grpc.StatusCode.NOT_FOUND, "not found"),
                ("Bind", api.BindRequest(), grpc.StatusCode.INVALID_ARGUMENT, "binding"),
                ("BindBatch", api.BindBatchRequest(), grpc.StatusCode.INVALID_ARGUMENT, "bindings: required"),
                ("BindBatch", api.BindBatchRequest(bindings=[t.Binding()] * 1001), grpc.StatusCode.INVALID_ARGUMENT,
                 "at most 1000"),
                ("Exec", api.ExecRequest(pod="x"), grpc.StatusCode.INVALID_ARGUMENT, "command"),
            ]
            huge = pod("huge")
            huge.metadata.annotations["blob"] = "x" * (2 << 20)
            cases.append(("Create", api.CreateRequest(object=kinds.wrap(huge)), grpc.StatusCode.INVALID_ARGUMENT,
                          "too large"))
            wrong = pod("wrong")
            wrong.spec.containers[0].ports.add(container_port=70000)
            cases.append(("Create", api.CreateRequest(object=kinds.wrap(wrong)), grpc.StatusCode.INVALID_ARGUMENT,
                          "containerPort: must be between 1 and 65535"))
            for method, request, code, text in cases:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await getattr(stub, method)(request, timeout=10)
                assert info.value.code() == code, (method, info.value)
                assert text in (info.value.details() or ""), (method, info.value.details())
            # A message over the transport limit is refused by gRPC itself, clearly.
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await channel.unary_unary("/skiff.api.v1.ApiServer/Create", request_serializer=_identity,
                                          response_deserializer=_identity)(b"\x0a" + b"\x00" * (20 << 20), timeout=20)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            # Still serving.
            version = await stub.Version(api.VersionRequest(), timeout=10)
            assert version.store.startswith("etcd3 ")
            created = await stub.Create(api.CreateRequest(object=kinds.wrap(pod("fine"))), timeout=10)
            assert created.pod.metadata.uid


class FakeNodeAgent(nodeagent_pb2_grpc.NodeAgentServicer):
    """Stands in for a node agent's logs/exec endpoint (the forwarding is what is tested here)."""

    def __init__(self) -> None:
        self.requests: list[object] = []

    async def ContainerLogs(self, request: api.LogsRequest, context: object) -> AsyncIterator[api.LogChunk]:  # type: ignore[override]
        self.requests.append(request)
        for i in range(3):
            yield api.LogChunk(data=f"{request.pod}/{request.container} line {i}\n".encode())

    async def Exec(self, request: api.ExecRequest, context: object) -> api.ExecResponse:  # type: ignore[override]
        self.requests.append(request)
        return api.ExecResponse(stdout=" ".join(request.command).encode(), stderr=b"", exit_code=3)


async def test_logs_and_exec_are_forwarded_to_the_node_agent(tmp_path: Path) -> None:
    agent = FakeNodeAgent()
    server = grpc.aio.server()
    nodeagent_pb2_grpc.add_NodeAgentServicer_to_server(agent, server)
    agent_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        with control_plane(tmp_path) as cp:
            client = Client(cp.apiserver_endpoints)
            try:
                two = pod("two")
                two.spec.containers.add(name="side", image="busybox:1.36")
                await client.create(two)
                with pytest.raises(errors.FailedPreconditionError, match="not scheduled"):
                    await client.exec("default", "two", ["true"], container="main")
                with pytest.raises(errors.InvalidError, match="choose one of: \\[main side\\]"):
                    await client.exec("default", "two", ["true"])
                await client.bind("default", "two", "n1")
                # The reason crosses gRPC: the scheduler tells a lost bind race by its type alone.
                with pytest.raises(errors.PodAlreadyAssignedError, match='already assigned to node "n1"'):
                    await client.bind("default", "two", "n2")
                with pytest.raises(errors.FailedPreconditionError, match='node "n1" of pod "two" is not registered'):
                    await client.exec("default", "two", ["true"], container="main")
                await client.create(node("n1", port=agent_port))
                result = await client.exec("default", "two", ["echo", "hi"], container="side")
                assert (result.stdout, result.exit_code) == (b"echo hi", 3)
                chunks = [c async for c in client.logs("default", "two", container="main")]
                assert b"".join(chunks).decode().splitlines() == [f"two/main line {i}" for i in range(3)]
                # A node whose agent does not answer.
                await client.create(node("n2", port=free_port()))
                lost = pod("lost")
                await client.create(lost)
                await client.bind("default", "lost", "n2")
                with pytest.raises(errors.FailedPreconditionError, match='cannot reach the node agent of node "n2"'):
                    await client.exec("default", "lost", ["true"])
            finally:
                await client.close()
    finally:
        await server.stop(None)


async def test_slow_watcher_over_grpc_is_cut_off_and_others_carry_on(tmp_path: Path) -> None:
    """A client that stops reading fills its bounded buffer and gets RESOURCE_EXHAUSTED; others see all."""
    with control_plane(tmp_path, apiserver_args=["--watch-buffer", "50"]) as cp:
        # No BDP probing: the slow client's flow-control window stays small, as a stalled client's would.
        slow_channel = grpc.aio.insecure_channel(cp.apiserver_endpoints, options=[("grpc.http2.bdp_probe", 0)])
        client = Client(cp.apiserver_endpoints)
        try:
            rv = (await client.list(t.Pod)).resource_version
            watch = slow_channel.unary_stream("/skiff.api.v1.ApiServer/Watch",
                                              request_serializer=api.WatchRequest.SerializeToString,
                                              response_deserializer=api.WatchEvent.FromString)
            slow = watch(api.WatchRequest(resource="pods", resource_version=rv))
            count = 400
            fast_seen: list[str] = []

            async def fast() -> None:
                async for ev in client.watch(t.Pod, resource_version=rv):
                    fast_seen.append(ev.obj.metadata.name)
                    if len(fast_seen) == count:
                        return

            reader = asyncio.ensure_future(fast())
            await asyncio.sleep(0.5)
            for i in range(count):
                p = pod(f"p{i}")
                p.metadata.annotations["padding"] = "x" * 3000
                await client.create(p)
            await asyncio.wait_for(reader, 60)
            assert fast_seen == [f"p{i}" for i in range(count)]
            received = 0
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in slow:
                    received += 1
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "too slow" in (info.value.details() or "")
            assert 0 < received < count
        finally:
            await client.close()
            await slow_channel.close(None)


async def test_http_api_beside_grpc_on_the_same_registry(tmp_path: Path) -> None:
    """--http-listen: a pod created over gRPC is listed over HTTP, and one created over HTTP is
    read over gRPC (one registry, two faces)."""
    import aiohttp

    http_port = free_port()
    with control_plane(tmp_path, apiserver_args=["--http-listen", f"127.0.0.1:{http_port}"]) as cp:
        client = Client(cp.apiservers[0].endpoint)
        base = f"http://127.0.0.1:{http_port}"
        try:
            await client.create(pod("via-grpc"))
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{base}/readyz") as r:
                    assert (r.status, await r.text()) == (200, "ok")
                async with session.get(f"{base}/api/v1/namespaces/default/pods") as r:
                    listed = await r.json()
                assert [p["metadata"]["name"] for p in listed["items"]] == ["via-grpc"]
                body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "via-http"},
                        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
                async with session.post(f"{base}/api/v1/namespaces/default/pods", json=body) as r:
                    assert r.status == 201
            got = await client.get(t.Pod, "via-http", "default")
            assert got.spec.containers[0].image == "busybox"
        finally:
            await client.close()


def test_http_port_in_use_is_a_clear_startup_error(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        cluster = start_etcd(tmp_path)
        try:
            argv = apiserver_argv(cluster.members[0].endpoint, free_port(),
                                  extra=["--http-listen", f"127.0.0.1:{taken}"])
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[3])
        finally:
            cluster.stop()
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{taken} for the Kubernetes API" in done.stderr

"""gRPC streams (Watch) that end early: a client that cancels or goes away while the server is
blocked sending to it, and a server that stops under open streams. Each stream must end in its
own task: nothing logged about a caller context reset elsewhere ("Token was created in a
different Context", caller.acting_as), no internal error, and the server stops.

Real gRPC on loopback over the real registry; the events are large so that a watcher which does
not read fills the transport's flow-control window and the server's send is what is pending.
"""

from __future__ import annotations

import asyncio
import gc
import logging

import grpc.aio
import pytest

from controlplane.apiserver import caller
from controlplane.apiserver.allocator import Allocator
from controlplane.apiserver.authn import SELF, Authenticator
from controlplane.apiserver.forward import Forwarder
from controlplane.apiserver.inprocess import DEFAULT_OPTIONS
from controlplane.apiserver.memstore import MemoryStore
from controlplane.apiserver.registry import Registry
from controlplane.apiserver.server import grpc_server
from skiffpb.api.v1 import apiserver_pb2 as api
from skiffpb.api.v1 import apiserver_pb2_grpc as api_grpc
from skiffpb.api.v1 import types_pb2 as t

EVENTS, SIZE, WATCHERS = 20, 300_000, 3  # 6 MB per watcher: past flow control, under the 8 MB watch bound


@pytest.mark.parametrize("ending", ["client-cancels", "server-stops"])
async def test_watch_streams_end_in_their_own_task(ending: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    registry = Registry(MemoryStore(), allocator=Allocator(), options=DEFAULT_OPTIONS)
    await registry.start()
    forwarder = Forwarder(registry)
    server = grpc_server(registry, forwarder, Authenticator(registry, insecure=True))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        calls = [api_grpc.ApiServerStub(channel).Watch(api.WatchRequest(resource="configmaps", namespace="default"))
                 for _ in range(WATCHERS)]
        first = [asyncio.ensure_future(c.read()) for c in calls]  # each reads one event, then nothing
        await asyncio.sleep(0.3)
        with caller.acting_as(SELF):
            for i in range(EVENTS):
                await registry.create(t.ConfigMap(metadata=t.ObjectMeta(name=f"c{i}", namespace="default"),
                                                  data={"x": "y" * SIZE}))
        await asyncio.gather(*first)
        await asyncio.sleep(0.5)  # the server's sends are now blocked on the readers
        if ending == "client-cancels":
            for c in calls:
                c.cancel()
            await asyncio.sleep(0.5)
        async with asyncio.timeout(10):
            await server.stop(0.2)
        gc.collect()  # an abandoned stream generator would be closed now, from another task
        await asyncio.sleep(0.3)
        for c in calls:
            c.cancel()
    finally:
        await channel.close()
        await server.stop(None)
        await registry.stop()
        await forwarder.close()
    problems = [r for r in caplog.records if r.levelno >= logging.ERROR or "different Context" in r.getMessage()]
    assert not problems, [r.getMessage()[:200] for r in problems]

"""skiff.eventloop: `run` is asyncio.run on uvloop, and what the daemons need works on that loop."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
import uvloop

from skiff import eventloop
from skiffpb.etcd import rpc_pb2, rpc_pb2_grpc


async def _grpc_unary_and_stream() -> str:
    """A grpc.aio server and client on the running loop: a unary call and a bidi stream."""

    class KV(rpc_pb2_grpc.KVServicer):
        async def Range(self, request: rpc_pb2.RangeRequest,
                        context: grpc.aio.ServicerContext) -> rpc_pb2.RangeResponse:
            return rpc_pb2.RangeResponse(count=len(request.key))

    class Watch(rpc_pb2_grpc.WatchServicer):
        async def Watch(self, requests: AsyncIterator[rpc_pb2.WatchRequest],
                        context: grpc.aio.ServicerContext) -> AsyncIterator[rpc_pb2.WatchResponse]:
            async for req in requests:
                yield rpc_pb2.WatchResponse(watch_id=req.create_request.start_revision)

    server = grpc.aio.server()
    rpc_pb2_grpc.add_KVServicer_to_server(KV(), server)
    rpc_pb2_grpc.add_WatchServicer_to_server(Watch(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            resp = await rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"abc"))

            async def reqs() -> AsyncIterator[rpc_pb2.WatchRequest]:
                for rev in (7, 8):
                    yield rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(start_revision=rev))

            ids = [r.watch_id async for r in rpc_pb2_grpc.WatchStub(ch).Watch(reqs())]
    finally:
        await server.stop(None)
    return f"count={resp.count} ids={ids}"


async def _threadsafe_and_to_thread() -> str:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[str] = loop.create_future()
    threading.Thread(target=lambda: loop.call_soon_threadsafe(fut.set_result, "from-thread")).start()
    got = await asyncio.wait_for(fut, 5)
    name = await asyncio.to_thread(lambda: threading.current_thread() is not threading.main_thread())
    return f"{got} worker={name}"


async def _timer() -> str:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[str] = loop.create_future()
    loop.call_later(0.01, fut.set_result, "fired")
    return await asyncio.wait_for(fut, 5)


async def _signal_handler() -> str:
    loop = asyncio.get_running_loop()
    got = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, got.set)
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.wait_for(got.wait(), 5)
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
    return "signalled"


@pytest.mark.parametrize(("work", "want"), [
    (_grpc_unary_and_stream, "count=3 ids=[7, 8]"),
    (_threadsafe_and_to_thread, "from-thread worker=True"),
    (_timer, "fired"),
    (_signal_handler, "signalled"),
], ids=["grpc-aio-unary-and-stream", "call-soon-threadsafe-and-to-thread", "timer", "signal-handler"])
def test_daemon_needs_work_on_the_loop(work: Callable[[], Awaitable[str]], want: str) -> None:
    async def main() -> tuple[str, bool]:
        return await work(), isinstance(asyncio.get_running_loop(), uvloop.Loop)

    assert eventloop.run(main()) == (want, True)


def test_run_is_asyncio_run() -> None:
    """A new loop per call, closed afterwards; the coroutine's exception passes through."""
    loops: list[asyncio.AbstractEventLoop] = []

    async def remember() -> None:
        loops.append(asyncio.get_running_loop())

    async def fail() -> None:
        raise ValueError("boom")

    eventloop.run(remember())
    eventloop.run(remember())
    assert loops[0] is not loops[1]
    assert all(loop.is_closed() for loop in loops)
    with pytest.raises(ValueError, match="boom"):
        eventloop.run(fail())


@pytest.mark.parametrize(("set_first", "timeout", "want"), [
    (True, 1.0, True), (False, 0.01, False), (True, None, True),
], ids=["set", "timed-out", "set-no-timeout"])
async def test_wait_event(set_first: bool, timeout: float | None, want: bool) -> None:
    event = asyncio.Event()
    if set_first:
        event.set()
    assert await eventloop.wait_event(event, timeout) is want


async def test_wait_event_never_swallows_a_cancellation_that_comes_with_the_event() -> None:
    event = asyncio.Event()
    task = asyncio.ensure_future(eventloop.wait_event(event, 30))
    await asyncio.sleep(0.01)
    event.set()
    task.cancel()  # in the same loop pass: asyncio.wait_for (3.11) returned True here
    with pytest.raises(asyncio.CancelledError):
        await task

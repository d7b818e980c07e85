"""A minimal synchronous etcd v3 client over the generated stubs, for store tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from queue import Empty, Queue
from typing import Any

import grpc

from skiffpb.etcd import kv_pb2, rpc_pb2, rpc_pb2_grpc


def prefix_end(key: bytes) -> bytes:
    b = bytearray(key)
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return b"\x00"


class Client:
    def __init__(self, endpoint: str) -> None:
        self.channel = grpc.insecure_channel(endpoint)
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.watch_stub = rpc_pb2_grpc.WatchStub(self.channel)
        self.lease = rpc_pb2_grpc.LeaseStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def put(self, key: bytes, value: bytes, *, timeout: float = 10.0, **kw: Any) -> rpc_pb2.PutResponse:
        resp: rpc_pb2.PutResponse = self.kv.Put(rpc_pb2.PutRequest(key=key, value=value, **kw), timeout=timeout)
        return resp

    def get(self, key: bytes, *, prefix: bool = False, timeout: float = 10.0, **kw: Any) -> rpc_pb2.RangeResponse:
        end = prefix_end(key) if prefix else b""
        resp: rpc_pb2.RangeResponse = self.kv.Range(rpc_pb2.RangeRequest(key=key, range_end=end, **kw),
                                                   timeout=timeout)
        return resp

    def watch(self, key: bytes, *, prefix: bool = False, start_revision: int = 0,
              prev_kv: bool = False) -> Watch:
        return Watch(self, rpc_pb2.WatchCreateRequest(
            key=key, range_end=prefix_end(key) if prefix else b"", start_revision=start_revision, prev_kv=prev_kv))


class Watch:
    """One watch on its own stream; responses are collected on a background thread."""

    def __init__(self, client: Client, create: rpc_pb2.WatchCreateRequest) -> None:
        self._requests: Queue[rpc_pb2.WatchRequest | None] = Queue()
        self._requests.put(rpc_pb2.WatchRequest(create_request=create))
        self.responses: Queue[rpc_pb2.WatchResponse] = Queue()
        self._call = client.watch_stub.Watch(self._iter())
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _iter(self) -> Iterator[rpc_pb2.WatchRequest]:
        while True:
            r = self._requests.get()
            if r is None:
                return
            yield r

    def _pump(self) -> None:
        try:
            for resp in self._call:
                self.responses.put(resp)
        except grpc.RpcError:
            pass

    def request_progress(self) -> None:
        self._requests.put(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))

    def next(self, timeout: float = 10.0) -> rpc_pb2.WatchResponse:
        return self.responses.get(timeout=timeout)

    def events(self, n: int, *, timeout: float = 15.0) -> list[kv_pb2.Event]:
        """Exactly the next n events (fails on timeout); progress/created responses are skipped."""
        import time

        out: list[kv_pb2.Event] = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            try:
                resp = self.responses.get(timeout=max(0.01, deadline - time.monotonic()))
            except Empty:
                raise AssertionError(f"watch: got {len(out)} of {n} events before timeout") from None
            assert not resp.canceled, resp
            out.extend(resp.events)
        return out

    def no_more_events(self, wait: float = 1.0) -> list[kv_pb2.Event]:
        import time

        extra: list[kv_pb2.Event] = []
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                extra.extend(self.responses.get(timeout=0.1).events)
            except Empty:
                pass
        return extra

    def close(self) -> None:
        self._requests.put(None)
        self._call.cancel()

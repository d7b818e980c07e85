"""Doing network things from the node's network namespace.

In production the agent runs in its node's netns and this is a plain thread pool. In tests and
network-namespace labs the agent process may stay in the root netns (to reach an api-server on
127.0.0.1) while its node lives in `/run/netns/<name>`: then every worker thread of this pool
enters that netns once (setns affects only the calling thread), and sockets, netlink handles
and /proc/sys/net writes made in those threads belong to the node. Sockets keep their netns
after creation, so a connected socket can be handed to asyncio.

Never send pod or lab traffic from the root netns: probes and routes go through here.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000


def _enter(path: str) -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


class NodeNetwork:
    def __init__(self, netns: str = "", *, threads: int = 4) -> None:
        self.netns = netns
        if netns and not os.path.exists(netns):
            raise FileNotFoundError(f"--netns {netns}: no such network namespace")
        init: Callable[[], None] | None = (lambda: _enter(netns)) if netns else None
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="node-net", initializer=init)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run a blocking function in the node's netns."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def open_connection(self, host: str, port: int, *, timeout: float) -> tuple[asyncio.StreamReader,
                                                                                       asyncio.StreamWriter]:
        def connect() -> socket.socket:
            return socket.create_connection((host, port), timeout=timeout)

        sock = await asyncio.wait_for(self.run(connect), timeout + 1)
        sock.setblocking(False)
        return await asyncio.open_connection(sock=sock)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

"""Serving a daemon's Prometheus metrics and health checks: /metrics, /healthz, /livez, /readyz.

Every Skiff daemon serves these through `serve()` on its `--metrics-bind-address`
(`add_metrics_flag`), an aiohttp app in the daemon's own event loop; the metrics themselves are
prometheus_client collectors, by default in the process's default registry, named as the
upstream component names them (docs/observability.md lists every family).

What must hold:
- the address is loopback unless the operator says otherwise: the endpoints have no
  authentication of their own (as Kubernetes' components bound to 127.0.0.1);
- /livez and /healthz answer 200 while every liveness check passes, /readyz while every
  liveness and readiness check passes; a failing check answers 500 with Kubernetes' body
  (`[-]name failed: reason`), `?verbose` lists every check either way;
- a check is a cheap synchronous function (it reads state, never does I/O): the probes of a
  loaded daemon must answer at once;
- metrics are auxiliary: an address already in use is logged and the daemon runs on without
  them (tests start several copies of a daemon on one host), it never stops the daemon.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

log = logging.getLogger("skiff.metrics")

# A check returns "" when healthy, else why not (shown after "failed:").
Check = Callable[[], str]


def ok_when(condition: Callable[[], bool], reason: str) -> Check:
    """A check from a predicate: healthy while `condition()` holds, else failed with `reason`."""
    return lambda: "" if condition() else reason


@dataclass
class Health:
    """A daemon's named health checks: `live` ones for /livez (and /healthz), `ready` ones on top for /readyz."""

    live: dict[str, Check] = field(default_factory=dict)
    ready: dict[str, Check] = field(default_factory=dict)

    def run(self, endpoint: str) -> tuple[bool, list[str]]:
        """(all passed, one line per check in Kubernetes' verbose form) for /livez, /healthz or /readyz."""
        checks: dict[str, Check] = {"ping": lambda: "", **self.live}
        if endpoint == "readyz":
            checks.update(self.ready)
        lines, healthy = [], True
        for name, check in checks.items():
            try:
                why = check()
            except Exception as exc:  # a check that raises has failed; the probe itself must answer
                why = f"{type(exc).__name__}: {exc}"
            if why:
                healthy = False
                lines.append(f"[-]{name} failed: {why}")
            else:
                lines.append(f"[+]{name} ok")
        return healthy, lines


def body(endpoint: str, healthy: bool, lines: list[str], *, verbose: bool) -> str:
    """Kubernetes' answer: `ok` when healthy and not verbose, else the lines and the verdict."""
    if healthy and not verbose:
        return "ok"
    verdict = f"{endpoint} check passed" if healthy else f"{endpoint} check failed"
    return "\n".join([*lines, verdict]) + "\n"


def add_metrics_flag(parser: argparse.ArgumentParser, port: int) -> None:
    """`--metrics-bind-address host:port` (default 127.0.0.1:`port`; empty: not served)."""
    parser.add_argument("--metrics-bind-address", default=f"127.0.0.1:{port}",
                        help="host:port serving /metrics, /healthz, /livez and /readyz, plain HTTP without "
                             "authentication: keep it on loopback (default %(default)s; empty: not served)")


def parse_address(address: str) -> tuple[str, int]:
    """("127.0.0.1", 10249) from "127.0.0.1:10249", ("::1", 9) from "[::1]:9"; ValueError when malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{address!r} is not host:port")
    return host.strip("[]") or "127.0.0.1", int(port)


def app(health: Health | None = None, *, registry: CollectorRegistry = REGISTRY) -> web.Application:
    """The aiohttp app: /metrics from `registry`, the three health endpoints from `health`."""
    checks = health or Health()

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    def probe(endpoint: str) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.Response:
            healthy, lines = checks.run(endpoint)
            return web.Response(text=body(endpoint, healthy, lines, verbose="verbose" in request.query),
                                status=200 if healthy else 500, content_type="text/plain")
        return handle

    application = web.Application()
    application.router.add_get("/metrics", metrics)
    for endpoint in ("healthz", "livez", "readyz"):
        application.router.add_get(f"/{endpoint}", probe(endpoint))
    return application


@dataclass
class Served:
    """A running metrics server: its port (useful with port 0) and how to stop it."""

    runner: web.AppRunner
    port: int

    async def close(self) -> None:
        await self.runner.cleanup()


async def serve(address: str, health: Health | None = None, *, registry: CollectorRegistry = REGISTRY,
                what: str = "metrics") -> Served | None:
    """Serve `app()` on `address` ("host:port", port 0 picks one); None when `address` is empty
    or cannot be bound (logged: the daemon runs on without metrics)."""
    if not address:
        return None
    host, port = parse_address(address)
    runner = web.AppRunner(app(health, registry=registry), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        log.error("%s not served: cannot listen on %s: %s", what, address, exc)
        return None
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    log.info("%s on http://%s:%d/metrics (and /healthz, /livez, /readyz)", what,
             f"[{host}]" if ":" in host else host, bound)
    return Served(runner, bound)



@asynccontextmanager
async def serving(address: str, health: Health | None = None, *, registry: CollectorRegistry = REGISTRY,
                  what: str = "metrics") -> AsyncIterator[Served | None]:
    """`serve()` for the duration of a `with` block (the daemon's main task)."""
    served = await serve(address, health, registry=registry, what=what)
    try:
        yield served
    finally:
        if served is not None:
            await served.close()

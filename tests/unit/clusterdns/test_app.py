"""clusterdns the process over the in-process api-server: no zone before the caches list, then it follows changes."""

from __future__ import annotations

import asyncio

from clusterdns.app import ClusterDns
from clusterdns.server import DnsServer
from clusterdns.zone import ZoneConfig, answer
from controlplane.apiserver.inprocess import InProcessApi
from skiffpb.api.v1 import types_pb2 as t


def svc(name: str, ip: str) -> t.Service:
    s = t.Service(api_version="v1", kind="Service", metadata=t.ObjectMeta(name=name, namespace="default"))
    s.spec.cluster_ip = ip
    s.spec.ports.add(name="http", port=80, protocol="TCP")
    return s


async def until(check: object, what: str) -> None:
    for _ in range(200):
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.01)
    raise AssertionError(what)


async def test_zone_after_sync_then_follows_changes() -> None:
    async with InProcessApi() as api:
        await scenario(api)


async def scenario(api: InProcessApi) -> None:
    await api.create(svc("web-service", "10.96.0.20"))
    server = DnsServer(ZoneConfig())
    app = ClusterDns(api, server, min_rebuild_interval=0.0)
    assert server.zone is None  # nothing is served as NXDOMAIN before the first list
    task = asyncio.ensure_future(app.run())
    try:
        await until(lambda: server.zone is not None, "first zone")
        assert server.zone is not None
        got = answer(server.zone, "web-service.default.svc.cluster.local", "A")
        assert [r.data for r in got.answer] == ["10.96.0.20"]
        await api.create(svc("db", "10.96.0.30"))

        def db_known() -> bool:
            return server.zone is not None and answer(server.zone, "db.default.svc.cluster.local", "A").answer != ()

        await until(db_known, "db in the zone")
        await api.delete(t.Service, "web-service", "default")

        def web_gone() -> bool:
            assert server.zone is not None
            return answer(server.zone, "web-service.default.svc.cluster.local", "A").rcode == "NXDOMAIN"

        await until(web_gone, "web-service removed from the zone")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

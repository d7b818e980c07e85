"""The Kubernetes REST API over real HTTP (aiohttp on loopback) in front of the real registry
(InProcessApi's, over the in-memory store): paths, Status errors, watch streams, subresources."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from controlplane.apiserver.forward import Forwarder
from controlplane.apiserver.inprocess import InProcessApi, Options
from controlplane.apiserver.rest import http

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
DEPLOY = {"apiVersion": "apps/v1", "kind": "Deployment",
          "metadata": {"name": "web", "labels": {"app": "web"}},
          "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                   "template": {"metadata": {"labels": {"app": "web"}},
                                "spec": {"containers": [{"name": "web", "image": "web:1",
                                                         "ports": [{"containerPort": 80}]}]}}}}
DEPLOYS = "/apis/apps/v1/namespaces/default/deployments"


class Api:
    def __init__(self, session: aiohttp.ClientSession, base: str, inproc: InProcessApi) -> None:
        self.session, self.base, self.inproc = session, base, inproc

    async def call(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                   accept: str = "application/json") -> tuple[int, Any]:
        data = json.dumps(body) if body is not None else None
        async with self.session.request(method, self.base + path, data=data,
                                        headers={"Content-Type": content_type, "Accept": accept}) as r:
            text = await r.text()
            return r.status, json.loads(text) if r.content_type == "application/json" else text


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    inproc = InProcessApi(options=Options(compaction_interval=0.0, watch_cache_size=8, bookmark_interval=0.2))
    await inproc.start()
    runner, port = await http.start(inproc.registry, Forwarder(inproc.registry), "127.0.0.1:0")
    try:
        async with aiohttp.ClientSession() as session:
            yield Api(session, f"http://127.0.0.1:{port}", inproc)
    finally:
        await runner.cleanup()
        await inproc.close()


async def test_create_get_list_table_and_errors(api: Api) -> None:
    code, created = await api.call("POST", DEPLOYS, DEPLOY)
    assert code == 201
    assert created["kind"] == "Deployment" and created["metadata"]["generation"] == 1
    code, again = await api.call("POST", DEPLOYS, DEPLOY)
    assert (code, again["reason"], again["details"]) == (409, "AlreadyExists",
                                                         {"name": "web", "group": "apps", "kind": "deployments"})
    code, listed = await api.call("GET", "/apis/apps/v1/deployments?labelSelector=app%3Dweb")
    assert code == 200 and listed["kind"] == "DeploymentList" and len(listed["items"]) == 1
    code, none = await api.call("GET", "/apis/apps/v1/deployments?labelSelector=app%3Dother")
    assert none["items"] == []
    code, tab = await api.call("GET", DEPLOYS + "/web", accept=TABLE)
    assert tab["kind"] == "Table" and tab["rows"][0]["cells"][:2] == ["web", "0/2"]
    code, missing = await api.call("GET", DEPLOYS + "/nope")
    assert (code, missing["reason"]) == (404, "NotFound")
    code, unknown = await api.call("GET", "/api/v1/namespaces/default/widgets")
    assert (code, unknown["reason"]) == (404, "NotFound")
    bad = {**DEPLOY, "metadata": {"name": "bad"}, "spec": {**DEPLOY["spec"], "replicas": -1}}
    code, invalid = await api.call("POST", DEPLOYS, bad)
    assert (code, invalid["reason"]) == (422, "Invalid")
    assert "spec.replicas" in [c["field"] for c in invalid["details"]["causes"]]
    stale = {**created, "spec": {**created["spec"], "replicas": 5}}
    stale["metadata"] = {**created["metadata"], "resourceVersion": "1"}
    code, conflict = await api.call("PUT", DEPLOYS + "/web", stale)
    assert (code, conflict["reason"]) == (409, "Conflict")


@pytest.mark.parametrize(("validation", "code", "warning"), [
    ("Strict", 422, None),
    ("Warn", 201, '299 - "unknown field \\"spec.runtimeClassName\\""'),
    ("", 201, '299 - "unknown field \\"spec.runtimeClassName\\""'),
    ("Ignore", 201, None),
], ids=["strict", "warn", "default-is-warn", "ignore"])
async def test_field_validation(api: Api, validation: str, code: int, warning: str | None) -> None:
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"runtimeClassName": "gvisor", "containers": [{"name": "c", "image": "busybox"}]}}
    query = f"?fieldValidation={validation}" if validation else ""
    async with api.session.post(f"{api.base}/api/v1/namespaces/default/pods{query}", json=body) as r:
        assert r.status == code
        assert r.headers.get("Warning") == warning
        if code == 422:
            assert (await r.json())["details"]["causes"][0]["field"] == "spec.runtimeClassName"


async def test_protobuf_bodies_are_refused_by_name(api: Api) -> None:
    code, body = await api.call("POST", DEPLOYS, DEPLOY, content_type="application/vnd.kubernetes.protobuf")
    assert (code, body["reason"]) == (415, "UnsupportedMediaType")
    assert "protobuf" in body["message"]


async def test_patch_types_scale_and_status(api: Api) -> None:
    await api.call("POST", DEPLOYS, DEPLOY)
    code, smp = await api.call("PATCH", DEPLOYS + "/web", {"spec": {"template": {"spec": {"containers": [
        {"name": "web", "env": [{"name": "A", "value": "1"}]}]}}}},
        content_type="application/strategic-merge-patch+json")
    assert code == 200
    container = smp["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "web:1" and container["env"] == [{"name": "A", "value": "1"}]
    code, merged = await api.call("PATCH", DEPLOYS + "/web", {"metadata": {"labels": {"x": "y"}}},
                                  content_type="application/merge-patch+json")
    assert merged["metadata"]["labels"] == {"app": "web", "x": "y"}
    code, jp = await api.call("PATCH", DEPLOYS + "/web", [{"op": "replace", "path": "/spec/replicas", "value": 4}],
                              content_type="application/json-patch+json")
    assert jp["spec"]["replicas"] == 4
    code, ssa = await api.call("PATCH", DEPLOYS + "/web", {}, content_type="application/apply-patch+yaml")
    assert (code, ssa["reason"]) == (415, "UnsupportedMediaType")
    code, scale = await api.call("PATCH", DEPLOYS + "/web/scale", {"spec": {"replicas": 7}},
                                 content_type="application/merge-patch+json")
    assert (code, scale["kind"], scale["spec"]["replicas"]) == (200, "Scale", 7)
    code, got = await api.call("GET", DEPLOYS + "/web/scale")
    assert got["spec"]["replicas"] == 7 and got["status"]["selector"] == "app=web"
    code, status = await api.call("PATCH", DEPLOYS + "/web/status", {"status": {"readyReplicas": 3}},
                                  content_type="application/merge-patch+json")
    assert code == 200 and status["status"]["readyReplicas"] == 3 and status["spec"]["replicas"] == 7


async def _events(api: Api, path: str, count: int, *, accept: str = "application/json") -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with api.session.get(api.base + path, headers={"Accept": accept}) as r:
        assert r.status == 200
        async with asyncio.timeout(10):
            async for line in r.content:
                out.append(json.loads(line))
                if len(out) == count:
                    break
    return out


async def test_watch_stream_resume_and_watch_list(api: Api) -> None:
    _, created = await api.call("POST", DEPLOYS, DEPLOY)
    rv = created["metadata"]["resourceVersion"]
    watcher = asyncio.ensure_future(_events(api, f"{DEPLOYS}?watch=true&resourceVersion={rv}", 2))
    await asyncio.sleep(0.2)
    await api.call("PATCH", DEPLOYS + "/web", {"spec": {"replicas": 3}}, content_type="application/merge-patch+json")
    await api.call("DELETE", DEPLOYS + "/web")
    events = await watcher
    assert [e["type"] for e in events] == ["MODIFIED", "DELETED"]
    assert events[0]["object"]["spec"]["replicas"] == 3 and events[0]["object"]["kind"] == "Deployment"
    listing = await _events(api, f"{DEPLOYS}?watch=true&sendInitialEvents=true&allowWatchBookmarks=true"
                                 "&resourceVersionMatch=NotOlderThan", 1)
    assert listing[0]["type"] == "BOOKMARK"
    assert listing[0]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


async def test_watch_too_old_is_an_error_event_with_410(api: Api) -> None:
    for i in range(12):
        body = {**DEPLOY, "metadata": {"name": f"w{i}", "labels": {"app": "web"}}}
        await api.call("POST", DEPLOYS, body)
    await api.inproc.compact()
    events = await _events(api, f"{DEPLOYS}?watch=true&resourceVersion=2", 1)
    assert events[0]["type"] == "ERROR"
    assert (events[0]["object"]["code"], events[0]["object"]["reason"]) == (410, "Expired")


async def test_watch_as_table(api: Api) -> None:
    watcher = asyncio.ensure_future(_events(api, f"{DEPLOYS}?watch=true", 1, accept=TABLE))
    await asyncio.sleep(0.2)
    await api.call("POST", DEPLOYS, DEPLOY)
    (event,) = await watcher
    assert event["type"] == "ADDED" and event["object"]["kind"] == "Table"
    assert event["object"]["rows"][0]["cells"][0] == "web"


async def test_delete_options_and_discovery(api: Api) -> None:
    await api.call("POST", DEPLOYS, DEPLOY)
    code, gone = await api.call("DELETE", DEPLOYS + "/web", {"kind": "DeleteOptions", "apiVersion": "v1",
                                                             "preconditions": {"uid": "not-the-uid"}})
    assert (code, gone["reason"]) == (409, "Conflict")
    code, done = await api.call("DELETE", DEPLOYS + "/web", {"propagationPolicy": "Background"})
    assert (code, done["status"]) == (200, "Success")
    code, resources = await api.call("GET", "/apis/apps/v1")
    assert "deployments/scale" in [r["name"] for r in resources["resources"]]
    code, ns = await api.call("GET", "/api/v1/namespaces/default/status")  # not "status" pods in "default"
    assert (code, ns["kind"], ns["metadata"]["name"]) == (200, "Namespace", "default")
    code, version = await api.call("GET", "/version")
    assert version["major"] == "1"
    code, text = await api.call("GET", "/readyz")
    assert (code, text) == (200, "ok")


def test_start_refuses_a_taken_port() -> None:
    async def run() -> None:
        inproc = InProcessApi()
        runner, port = await http.start(inproc.registry, Forwarder(inproc.registry), "127.0.0.1:0")
        try:
            with pytest.raises(OSError, match="cannot listen"):
                await http.start(inproc.registry, Forwarder(inproc.registry), f"127.0.0.1:{port}")
        finally:
            await runner.cleanup()
            await inproc.close()
    asyncio.run(run())
    assert web  # the aiohttp server module is what serves this


# ---------------------------------------------------------------- the dashboard


@pytest.mark.parametrize(("path", "status", "content_type"), [
    ("/dashboard/", 200, "text/html"),
    ("/dashboard/app.js", 200, "text/javascript"),
    ("/dashboard/style.css", 200, "text/css"),
    ("/dashboard/nope.js", 404, "application/json"),
    ("/dashboard/../etc/passwd", 404, "application/json"),
], ids=["page", "script", "style", "unknown", "outside"])
async def test_dashboard_files(api: Api, path: str, status: int, content_type: str) -> None:
    async with api.session.get(api.base + path) as r:
        assert (r.status, r.content_type) == (status, content_type)
        if status == 200:
            assert "http://" not in await r.text() and "https://" not in await r.text()  # nothing from outside


async def test_dashboard_redirects_to_its_page(api: Api) -> None:
    async with api.session.get(api.base + "/dashboard", allow_redirects=False) as r:
        assert r.status == 302 and r.headers["Location"] == "/dashboard/"


async def test_dashboard_stream_lists_every_resource_then_follows_changes(api: Api) -> None:
    async with api.session.get(api.base + "/dashboard/watch") as r:
        assert r.status == 200

        async def next_line() -> dict[str, Any]:
            line = await asyncio.wait_for(r.content.readline(), 10)
            data: dict[str, Any] = json.loads(line)
            return data

        synced = {}
        while len(synced) < 8:
            msg = await next_line()
            assert msg["type"] == "SYNC"
            synced[msg["resource"]] = msg["items"]
        assert set(synced) == {"nodes", "pods", "services", "endpoints", "deployments", "statefulsets",
                               "daemonsets", "events"}
        assert synced["deployments"] == []
        code, _ = await api.call("POST", DEPLOYS, DEPLOY)
        assert code == 201
        msg = await next_line()
        assert (msg["resource"], msg["type"], msg["object"]["kind"], msg["object"]["metadata"]["name"]) == (
            "deployments", "ADDED", "Deployment", "web")

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

from controlplane.apiserver.forward import Forwarder, Session
from controlplane.apiserver.inprocess import InProcessApi, Options
from controlplane.apiserver.rest import http, k8sproto
from skiff.convert import from_data
from skiffpb.api.v1 import apiserver_pb2
from skiffpb.api.v1 import nodeagent_pb2 as na
from skiffpb.api.v1 import types_pb2 as t
from tests.unit.controlplane.apiserver.test_rest_k8sproto import body, entry, ld

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


async def test_protobuf_bodies(api: Api) -> None:
    """What typed clients send: a ConfigMap in protobuf is created; a field Skiff cannot read is 415."""
    cm = body("v1", "ConfigMap", ld(1, ld(1, "typed") + ld(2, "") + ld(8, b"")) + entry(2, "a", "b"))
    async with api.session.post(api.base + "/api/v1/namespaces/default/configmaps", data=cm,
                                headers={"Content-Type": k8sproto.PROTOBUF}) as r:
        created = await r.json()
        assert (r.status, created["data"], created["metadata"]["namespace"]) == (201, {"a": "b"}, "default")
    unreadable = body("v1", "ConfigMap", ld(1, ld(1, "x")) + ld(9, "something"))
    async with api.session.post(api.base + "/api/v1/namespaces/default/configmaps", data=unreadable,
                                headers={"Content-Type": k8sproto.PROTOBUF}) as r:
        refused = await r.json()
        assert (r.status, refused["reason"]) == (415, "UnsupportedMediaType")
        assert "field 9 of ConfigMap" in refused["message"]
    code, bad = await api.call("POST", DEPLOYS, DEPLOY, content_type=k8sproto.PROTOBUF)  # JSON in disguise
    assert (code, bad["reason"]) == (400, "BadRequest")
    options = body("meta.k8s.io/v1", "DeleteOptions", ld(4, "Foreground"))
    async with api.session.delete(api.base + "/api/v1/namespaces/default/configmaps/typed", data=options,
                                  headers={"Content-Type": k8sproto.PROTOBUF}) as r:
        assert r.status == 200


POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
       "spec": {"containers": [{"name": "c", "image": "web:1"}]}}
PODS = "/api/v1/namespaces/default/pods"


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
async def test_binding_and_eviction(api: Api, encoding: str) -> None:
    """What a scheduler and `kubectl drain` send (typed clients: protobuf)."""
    assert (await api.call("POST", PODS, POD))[0] == 201
    if encoding == "json":
        code, bound = await api.call("POST", PODS + "/p/binding", {"apiVersion": "v1", "kind": "Binding",
                                                                   "metadata": {"name": "p"},
                                                                   "target": {"kind": "Node", "name": "n1"}})
    else:
        raw = body("v1", "Binding", ld(1, ld(1, "p")) + ld(2, ld(1, "Node") + ld(3, "n1")))
        async with api.session.post(api.base + PODS + "/p/binding", data=raw,
                                    headers={"Content-Type": k8sproto.PROTOBUF}) as r:
            code, bound = r.status, await r.json()
    assert (code, bound["status"]) == (201, "Success")
    assert (await api.call("GET", PODS + "/p"))[1]["spec"]["nodeName"] == "n1"
    code, again = await api.call("POST", PODS + "/p/binding", {"target": {"kind": "Node", "name": "n2"}})
    assert (code, again["reason"]) == (409, "Conflict") and "already assigned" in again["message"]
    stale = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p"},
             "deleteOptions": {"preconditions": {"uid": "not-its-uid"}}}
    code, refused = await api.call("POST", PODS + "/p/eviction", stale)
    assert code == 409, refused
    if encoding == "json":
        code, evicted = await api.call("POST", PODS + "/p/eviction", {"apiVersion": "policy/v1", "kind": "Eviction",
                                                                      "metadata": {"name": "p"}})
    else:
        raw = body("policy/v1", "Eviction", ld(1, ld(1, "p")) + ld(2, b""))
        async with api.session.post(api.base + PODS + "/p/eviction", data=raw,
                                    headers={"Content-Type": k8sproto.PROTOBUF}) as r:
            code, evicted = r.status, await r.json()
    assert (code, evicted["status"]) == (201, "Success")
    code, pod = await api.call("GET", PODS + "/p")
    assert code == 404 or "deletionTimestamp" in pod["metadata"]  # a bound pod goes gracefully
    code, missing = await api.call("POST", PODS + "/nope/eviction", {"kind": "Eviction", "metadata": {"name": "nope"}})
    assert (code, missing["reason"]) == (404, "NotFound")


class CommandRunner(Forwarder):
    """The forwarder with the node agent's side played here: `sh -c 'echo X; exit N'` answers X
    and N (the WebSocket protocol is what is under test; the e2e test runs a real container)."""

    async def exec(self, request: apiserver_pb2.ExecRequest) -> apiserver_pb2.ExecResponse:
        await self._resolve(request.namespace, request.pod, request.container)  # a missing pod: NotFound
        script = request.command[-1]
        code = int(script.rsplit("exit ", 1)[1]) if "exit " in script else 0
        return apiserver_pb2.ExecResponse(stdout=b"out\n", stderr=b"err\n" if code else b"", exit_code=code)

    async def stream(self, open_: na.StreamOpen) -> Session:
        await self._resolve(open_.namespace, open_.pod, open_.container)
        return Echo(open_)


class Echo(Session):
    """The node agent's Stream played here as `cat`: stdin comes back on stdout, upper-cased
    (so an echo of kubectl's own message could not pass), and closing stdin ends it with Success."""

    def __init__(self, open_: na.StreamOpen) -> None:
        self.open = open_
        self.out: asyncio.Queue[na.StreamFrame | None] = asyncio.Queue()

    async def write(self, frame: na.StreamFrame) -> None:
        if frame.channel == 0:
            await self.out.put(na.StreamFrame(channel=1, data=frame.data.upper()))
        elif frame.channel == 255 and frame.data == b"\x00":
            await self.out.put(na.StreamFrame(channel=3, data=b'{"kind":"Status","status":"Success"}'))
            await self.out.put(None)

    async def read(self) -> na.StreamFrame | None:
        return await self.out.get()

    def cancel(self) -> None:
        pass


@pytest.mark.parametrize(("protocol", "script", "stdin", "expected"), [
    ("v5.channel.k8s.io", "echo out", False, (b"out\n", b"", "Success", None)),
    ("v5.channel.k8s.io", "exit 3", False, (b"out\n", b"err\n", "Failure", "3")),
    ("v4.channel.k8s.io", "exit 7", False, (b"out\n", b"err\n", "Failure", "7")),
    ("v5.channel.k8s.io", "cat", True, (b"HI\n", b"", "Success", None)),
], ids=["v5-success", "v5-exit-3", "v4-exit-7", "stdin-streamed"])
async def test_exec_over_websocket(protocol: str, script: str, stdin: bool,
                                   expected: tuple[bytes, bytes, str, str | None]) -> None:
    inproc = InProcessApi(options=Options(compaction_interval=0.0))
    await inproc.start()
    runner, port = await http.start(inproc.registry, CommandRunner(inproc.registry), "127.0.0.1:0")
    try:
        await inproc.registry.create(from_data({**POD, "metadata": {"name": "p", "namespace": "default"}}, t.Pod))
        await inproc.registry.bind(t.Binding(metadata=t.ObjectMeta(name="p", namespace="default"),
                                             target=t.ObjectReference(kind="Node", name="n1")))
        endpoints = t.NodeDaemonEndpoints(kubelet_endpoint=t.DaemonEndpoint(port=10250))
        address = t.NodeAddress(type="InternalIP", address="127.0.0.1")
        await inproc.registry.create(t.Node(metadata=t.ObjectMeta(name="n1"),
                                            status=t.NodeStatus(daemon_endpoints=endpoints, addresses=[address])))
        pod = await inproc.registry.get("pods", "default", "p")
        pod.status.phase = "Running"
        pod.status.container_statuses.add(name="c", state=t.ContainerState(running=t.ContainerStateRunning()))
        await inproc.registry.update(pod, status=True)
        query = f"command=sh&command=-c&command={script.replace(' ', '+')}&stdout=true&stderr=true"
        if stdin:
            query += "&stdin=true"
        channels: dict[int, bytes] = {1: b"", 2: b"", 3: b""}
        async with aiohttp.ClientSession() as session, session.ws_connect(
                f"http://127.0.0.1:{port}{PODS}/p/exec?{query}", protocols=(protocol,)) as ws:
            assert ws.protocol == protocol
            if stdin:  # what `echo hi | kubectl exec -i` sends: stdin, then its close (v5)
                await ws.send_bytes(b"\x00hi\n")
                await ws.send_bytes(b"\xff\x00")
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    channels[msg.data[0]] += msg.data[1:]
        stdout, stderr, status, code = expected
        assert (channels[1], channels[2]) == (stdout, stderr), channels[3]
        outcome = json.loads(channels[3])
        assert outcome["status"] == status
        if code is not None:
            assert outcome["reason"] == "NonZeroExitCode"
            assert outcome["details"]["causes"] == [{"reason": "ExitCode", "message": code}]
        async with aiohttp.ClientSession() as session, session.get(
                f"http://127.0.0.1:{port}{PODS}/p/exec?command=ls") as plain:
            assert plain.status == 400 and "WebSocket" in (await plain.json())["message"]
    finally:
        await runner.cleanup()
        await inproc.close()


APPLY = "application/apply-patch+yaml"


async def test_server_side_apply(api: Api) -> None:
    code, missing = await api.call("PATCH", DEPLOYS + "/web", DEPLOY, content_type=APPLY)
    assert (code, missing["reason"]) == (400, "BadRequest") and "fieldManager" in missing["message"]
    code, created = await api.call("PATCH", DEPLOYS + "/web?fieldManager=kubectl", DEPLOY, content_type=APPLY)
    assert code == 201 and created["spec"]["replicas"] == 2
    entry_ = created["metadata"]["managedFields"][0]
    assert (entry_["manager"], entry_["operation"]) == ("kubectl", "Apply")
    assert entry_["fieldsV1"]["f:spec"]["f:replicas"] == {}
    code, again = await api.call("PATCH", DEPLOYS + "/web?fieldManager=kubectl", DEPLOY, content_type=APPLY)
    assert code == 200 and again["spec"]["replicas"] == 2
    code, _ = await api.call("PATCH", DEPLOYS + "/web/scale?fieldManager=kubectl-scale", {"spec": {"replicas": 5}},
                             content_type="application/merge-patch+json")
    assert code == 200
    code, conflict = await api.call("PATCH", DEPLOYS + "/web?fieldManager=kubectl", DEPLOY, content_type=APPLY)
    assert (code, conflict["reason"]) == (409, "Conflict")
    assert conflict["details"]["causes"] == [{"reason": "FieldManagerConflict", "field": ".spec.replicas",
                                              "message": 'conflict with "kubectl-scale"'}]
    code, forced = await api.call("PATCH", DEPLOYS + "/web?fieldManager=kubectl&force=true", DEPLOY,
                                  content_type=APPLY)
    assert code == 200 and forced["spec"]["replicas"] == 2
    # a label no longer applied goes; one set by another manager stays
    code, _ = await api.call("PATCH", DEPLOYS + "/web?fieldManager=other", {"metadata": {"labels": {"keep": "1"}}},
                             content_type="application/merge-patch+json")
    smaller = {**DEPLOY, "metadata": {"name": "web"}}
    code, applied = await api.call("PATCH", DEPLOYS + "/web?fieldManager=kubectl", smaller, content_type=APPLY)
    assert code == 200 and applied["metadata"]["labels"] == {"keep": "1"}
    code, wrong = await api.call("PATCH", DEPLOYS + "/web?fieldManager=kubectl", {**DEPLOY, "kind": "ReplicaSet"},
                                 content_type=APPLY)
    assert (code, wrong["reason"]) == (400, "BadRequest")


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
    code, scale = await api.call("PATCH", DEPLOYS + "/web/scale", {"spec": {"replicas": 7}},
                                 content_type="application/merge-patch+json")
    assert (code, scale["kind"], scale["spec"]["replicas"]) == (200, "Scale", 7)
    code, got = await api.call("GET", DEPLOYS + "/web/scale")
    assert got["spec"]["replicas"] == 7 and got["status"]["selector"] == "app=web"
    code, status = await api.call("PATCH", DEPLOYS + "/web/status", {"status": {"readyReplicas": 3}},
                                  content_type="application/merge-patch+json")
    assert code == 200 and status["status"]["readyReplicas"] == 3 and status["spec"]["replicas"] == 7


@pytest.mark.parametrize(("ops", "field", "says"), [
    ([{"op": "test", "path": "/spec/replicas", "value": 5}, {"op": "replace", "path": "/spec/replicas", "value": 6}],
     "/spec/replicas", "operation 0 (test) at /spec/replicas: test failed: the value is not 5"),
    ([{"op": "remove", "path": "/metadata/labels/tier"}], "/metadata/labels/tier",
     'operation 0 (remove) at /metadata/labels/tier: cannot remove "tier": it does not exist'),
], ids=["test-fails", "remove-missing"])
async def test_a_json_patch_that_cannot_apply_names_the_path(api: Api, ops: Any, field: str, says: str) -> None:
    await api.call("POST", DEPLOYS, DEPLOY)
    code, refused = await api.call("PATCH", DEPLOYS + "/web", ops, content_type="application/json-patch+json")
    assert (code, refused["reason"]) == (422, "Invalid")
    assert refused["details"]["causes"] == [{"reason": "FieldValueInvalid", "field": field, "message": says}]
    assert says in refused["message"]
    code, unchanged = await api.call("GET", DEPLOYS + "/web")
    assert unchanged["spec"]["replicas"] == 2


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

"""The api-server's request metrics (controlplane/apiserver/metrics.py): what a gRPC call is in
kube-apiserver's terms, the code it ends with, and that `track` counts each request once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import REGISTRY

from controlplane.apiserver import metrics
from controlplane.apiserver.server import BadRequest
from skiff import errors, kinds
from skiffpb.api.v1 import apiserver_pb2 as api
from skiffpb.api.v1 import metrics_pb2
from skiffpb.api.v1 import types_pb2 as t

POD = t.Pod(metadata=t.ObjectMeta(name="web-1", namespace="default"))
DEPLOY = t.Deployment(metadata=t.ObjectMeta(name="web", namespace="default"))


@pytest.mark.parametrize(("method", "request_", "info"), [
    ("Create", api.CreateRequest(object=kinds.wrap(DEPLOY)),
     metrics.RequestInfo("POST", "deployments", "", "namespace", "apps", "v1")),
    ("Get", api.GetRequest(resource="pods", namespace="default", name="web-1"),
     metrics.RequestInfo("GET", "pods", "", "resource", "", "v1")),
    ("List", api.ListRequest(resource="pods"), metrics.RequestInfo("LIST", "pods", "", "cluster", "", "v1")),
    ("List", api.ListRequest(resource="nodes", namespace=""), metrics.RequestInfo("LIST", "nodes", "", "cluster", "",
                                                                                    "v1")),
    ("UpdateStatus", api.UpdateRequest(object=kinds.wrap(POD)),
     metrics.RequestInfo("PUT", "pods", "status", "resource", "", "v1")),
    ("Watch", api.WatchRequest(resource="deployments", namespace="default"),
     metrics.RequestInfo("WATCH", "deployments", "", "namespace", "apps", "v1")),
    ("WatchBatch", api.WatchRequest(resource="pods"), metrics.RequestInfo("WATCH", "pods", "", "cluster", "", "v1")),
    ("Bind", api.BindRequest(binding=t.Binding(metadata=t.ObjectMeta(name="web-1", namespace="default"))),
     metrics.RequestInfo("POST", "pods", "binding", "resource", "", "v1")),
    ("Logs", api.LogsRequest(namespace="default", pod="web-1"),
     metrics.RequestInfo("CONNECT", "pods", "log", "resource", "", "v1")),
    ("PodMetrics", metrics_pb2.MetricsRequest(namespace="default"),
     metrics.RequestInfo("LIST", "pods", "", "namespace", "", "v1")),
    ("Version", api.VersionRequest(), metrics.RequestInfo("GET")),
    # A request that did not parse arrives as server.BadRequest: counted by its verb, never an error.
    ("Bind", BadRequest("BindRequest", "truncated"), metrics.RequestInfo("POST")),
    ("Get", BadRequest("GetRequest", "truncated"), metrics.RequestInfo("GET")),
], ids=["create", "get", "list-all", "list-cluster-scoped", "update-status", "watch", "watch-batch", "bind", "logs",
        "pod-metrics", "version", "unparsed-bind", "unparsed-get"])
def test_grpc_info(method: str, request_: Any, info: metrics.RequestInfo) -> None:
    assert metrics.grpc_info(f"/skiff.api.v1.ApiServer/{method}", request_) == info


@pytest.mark.parametrize(("exc", "code"), [
    (errors.NotFoundError("x"), 404), (errors.ConflictError("x"), 409), (errors.InvalidError("x"), 422),
    (errors.UnavailableError("x"), 503), (asyncio.CancelledError(), 499), (RuntimeError("x"), 500),
], ids=["not-found", "conflict", "invalid", "unavailable", "client-gone", "unexpected"])
def test_code_of(exc: BaseException, code: int) -> None:
    assert metrics.code_of(exc) == code


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


LABELS: dict[str, Any] = {"verb": "GET", "group": "", "version": "v1", "resource": "configmaps", "subresource": "",
                          "scope": "resource", "component": "apiserver"}


def test_track_counts_once_with_the_outcome_and_long_running_apart() -> None:
    info = metrics.request_info("GET", "configmaps", namespace="default", name="x")
    before_ok = value("apiserver_request_total", **LABELS, code="200")
    before_404 = value("apiserver_request_total", **LABELS, code="404")
    before_n = value("apiserver_request_duration_seconds_count", **LABELS)
    with metrics.track(info):
        assert value("apiserver_current_inflight_requests", request_kind="readOnly") >= 1
    with pytest.raises(errors.NotFoundError), metrics.track(info):
        raise errors.NotFoundError("gone")
    assert value("apiserver_request_total", **LABELS, code="200") == before_ok + 1
    assert value("apiserver_request_total", **LABELS, code="404") == before_404 + 1
    assert value("apiserver_request_duration_seconds_count", **LABELS) == before_n + 2

    watch = metrics.request_info("WATCH", "configmaps")
    wlabels = {**LABELS, "verb": "WATCH", "scope": "cluster"}
    with metrics.track(watch):
        assert value("apiserver_longrunning_requests", **wlabels) == 1
    assert value("apiserver_longrunning_requests", **wlabels) == 0
    assert value("apiserver_request_duration_seconds_count", **wlabels) == 0  # not a latency

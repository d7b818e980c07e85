"""The api-server's Prometheus metrics, named and labelled as kube-apiserver's (so its dashboards
and alerts apply): requests by verb, resource and code, their latency, requests in flight,
long-running requests (watches, logs, exec), registered watchers, objects per resource.

Both front ends record through `track()`: the gRPC service (server.py, from the method and the
request) and the Kubernetes REST API (rest/http.py, from the path), so one request counts once
whichever front end it came through; the verbs are Kubernetes' (GET, LIST, WATCH, POST, PUT,
PATCH, DELETE, CONNECT) and `code` is the HTTP code the request ended with (the gRPC front end
maps its error the way the REST front end would answer it).

What must hold:
- every request ends in exactly one increment of apiserver_request_total, whatever the outcome
  (also when the client goes away: the cancellation is counted, code 499 as nginx's "client
  closed request", and re-raised);
- a long-running request counts in apiserver_longrunning_requests while it runs and never in
  apiserver_current_inflight_requests nor in the latency histogram (its duration is the
  client's choice);
- apiserver_storage_objects, apiserver_registered_watchers and apiserver_terminated_watchers_total
  (watchers closed as too slow to read) are read from the watch caches at scrape time
  (`RegistryCollector`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from google.protobuf.message import Message
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from controlplane.apiserver.rest.status import code_and_reason
from skiff import errors, kinds
from skiffpb.api.v1 import apiserver_pb2 as api

if TYPE_CHECKING:
    from controlplane.apiserver.registry import Registry

LABELS = ("verb", "group", "version", "resource", "subresource", "scope", "component")
# kube-apiserver's buckets.
BUCKETS = (0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 45, 60)
LONG_RUNNING = frozenset({"WATCH", "CONNECT"})
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CLIENT_CLOSED = 499

REQUESTS = Counter("apiserver_request", "Counter of apiserver requests broken out for each verb, group, version, "
                   "resource, scope, component, and HTTP response code.", [*LABELS, "code"])
DURATION = Histogram("apiserver_request_duration_seconds", "Response latency distribution in seconds for each "
                     "verb, group, version, resource, subresource, scope and component.", LABELS, buckets=BUCKETS)
INFLIGHT = Gauge("apiserver_current_inflight_requests", "Maximal number of currently used inflight request limit "
                 "of this apiserver per request kind (here: the current number).", ["request_kind"])
LONGRUNNING = Gauge("apiserver_longrunning_requests", "Gauge of all active long-running apiserver requests broken "
                    "out by verb, group, version, resource, scope and component.", LABELS)


@dataclass(frozen=True)
class RequestInfo:
    """What a request is, in kube-apiserver's terms."""

    verb: str  # GET, LIST, WATCH, POST, PUT, PATCH, DELETE, CONNECT
    resource: str = ""  # "" for non-resource paths (/healthz, discovery)
    subresource: str = ""
    scope: str = ""  # resource, namespace, cluster ("" for non-resource paths)
    group: str = ""
    version: str = ""

    def labels(self, component: str) -> tuple[str, ...]:
        return (self.verb, self.group, self.version, self.resource, self.subresource, self.scope, component)


def request_info(verb: str, resource: str, *, namespace: str = "", name: str = "", subresource: str = "",
                 ) -> RequestInfo:
    """A RequestInfo for `resource` ("" when unknown), its group and version from skiff.kinds."""
    kind = kinds.by_resource(resource) if resource else None
    if kind is None:
        return RequestInfo(verb, resource, subresource, "resource" if name else "namespace" if namespace else
                           "cluster" if resource else "")
    group, _, version = kind.api_version.rpartition("/")
    scope = "resource" if name else "namespace" if namespace and kind.namespaced else "cluster"
    return RequestInfo(verb, kind.resource, subresource, scope, group, version)


def code_of(exc: BaseException) -> int:
    """The HTTP code a request that raised `exc` ends with."""
    if isinstance(exc, asyncio.CancelledError):
        return CLIENT_CLOSED
    if isinstance(exc, errors.SkiffError):
        return code_and_reason(exc)[0]
    return 500


class Tracked:
    """One request being tracked: set `code` before it ends when it is not 200."""

    def __init__(self) -> None:
        self.code = 200


@contextmanager
def track(info: RequestInfo, *, component: str = "apiserver") -> Iterator[Tracked]:
    """Count one request from start to end (see the module docstring)."""
    labels = info.labels(component)
    tracked = Tracked()
    long_running = info.verb in LONG_RUNNING
    gauge = LONGRUNNING.labels(*labels) if long_running else INFLIGHT.labels(
        "mutating" if info.verb in MUTATING else "readOnly")
    gauge.inc()
    start = time.perf_counter()
    try:
        yield tracked
    except BaseException as exc:
        if tracked.code == 200:  # else the handler already said how it ended (an abort after an error)
            tracked.code = code_of(exc)
        raise
    finally:
        gauge.dec()
        if not long_running:
            DURATION.labels(*labels).observe(time.perf_counter() - start)
        REQUESTS.labels(*labels, str(tracked.code)).inc()


# gRPC method -> Kubernetes verb (and the subresource the method implies).
GRPC_VERBS: dict[str, tuple[str, str]] = {
    "Create": ("POST", ""), "Get": ("GET", ""), "List": ("LIST", ""), "Update": ("PUT", ""),
    "UpdateStatus": ("PUT", "status"), "Delete": ("DELETE", ""), "Watch": ("WATCH", ""),
    "WatchBatch": ("WATCH", ""),
    "Bind": ("POST", "binding"), "BindBatch": ("POST", "binding"), "Logs": ("CONNECT", "log"),
    "Exec": ("CONNECT", "exec"),
    "Version": ("GET", ""), "NodeMetrics": ("LIST", ""), "PodMetrics": ("LIST", ""),
}


def grpc_info(method: str, request: Any) -> RequestInfo:
    """The RequestInfo of a gRPC call of `method` ("/skiff.api.v1.ApiServer/Create") with `request`.

    Never raises: a request that is not the method's message (one that did not parse arrives as
    server.BadRequest) or that names nothing known is counted by its verb alone."""
    name = method.rpartition("/")[2]
    verb, subresource = GRPC_VERBS.get(name, (name.upper(), ""))
    if not isinstance(request, Message):
        return RequestInfo(verb)
    try:
        return _grpc_info(name, verb, subresource, request)
    except (AttributeError, KeyError, TypeError, ValueError):
        return RequestInfo(verb)


def _grpc_info(name: str, verb: str, subresource: str, request: Message) -> RequestInfo:
    resource = str(getattr(request, "resource", "") or "")
    namespace = str(getattr(request, "namespace", "") or "")
    obj_name = str(getattr(request, "name", "") or "")
    obj = getattr(request, "object", None)
    if isinstance(obj, Message) and obj.WhichOneof("kind"):  # type: ignore[arg-type]
        inner = kinds.unwrap(obj)  # type: ignore[arg-type]
        resource = kinds.of_message(inner).resource
        meta = getattr(inner, "metadata", None)
        namespace = namespace or (meta.namespace if meta is not None else "")
        if verb == "PUT":
            obj_name = meta.name if meta is not None else ""
    if isinstance(request, api.BindRequest):
        meta = request.binding.metadata
        resource, obj_name, namespace = "pods", meta.name, meta.namespace
    elif isinstance(request, api.BindBatchRequest):
        resource = "pods"
    elif name in ("Logs", "Exec"):
        resource, obj_name = "pods", str(getattr(request, "pod", ""))
    elif name == "NodeMetrics":
        resource = "nodes"
    elif name == "PodMetrics":
        resource = "pods"
    return request_info(verb, resource, namespace=namespace, name=obj_name, subresource=subresource)


class RegistryCollector(Collector):
    """apiserver_storage_objects, apiserver_registered_watchers and apiserver_terminated_watchers_total,
    from the watch caches."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def describe(self) -> Iterator[Metric]:
        # Nothing up front: the registry then does not reserve the names, so a test process may
        # hold several of these (one per server it runs) and unregister each when it stops.
        return iter(())

    def collect(self) -> Iterator[Metric]:
        objects = GaugeMetricFamily("apiserver_storage_objects",
                                    "Number of stored objects at the time of last check split by kind.",
                                    labels=["resource"])
        watchers = GaugeMetricFamily("apiserver_registered_watchers",
                                     "Number of currently registered watchers for a given resources",
                                     labels=["group", "version", "kind"])
        terminated = CounterMetricFamily("apiserver_terminated_watchers",
                                         "Counter of watchers closed due to unresponsiveness broken by resource type.",
                                         labels=["group", "resource"])
        for resource, cache in sorted(self.registry.caches.items()):
            kind = cache.kind
            group, _, version = kind.api_version.rpartition("/")
            objects.add_metric([f"{resource}.{group}" if group else resource], len(cache.objects))
            watchers.add_metric([group, version, kind.kind], cache.watcher_count)
            terminated.add_metric([group, resource], cache.terminated_watchers)
        yield objects
        yield watchers
        yield terminated

"""The Kubernetes REST API over HTTP (aiohttp), in the api-server's event loop, over the same
Registry and Forwarder as the gRPC service.

What must hold:
- No API logic lives here: every verb is one call of the Registry (create, get, list, update,
  update_status, delete, watch) or the Forwarder (logs); this module only translates paths,
  query parameters and JSON (through skiff.convert, the one conversion) and builds the
  responses. Patches are read-modify-write over get and update with the resourceVersion read,
  so a concurrent writer makes the patch retry, never lose an update.
- Every failure is a metav1.Status with Kubernetes' code and reason (status.py); a watch that
  fails after it started ends with an ERROR event carrying that Status, never silently.
- Every object sent has kind and apiVersion; integers are JSON numbers (skiff.convert).
- Authentication happens once per request, in the `_errors` middleware, by the api-server's one
  Authenticator (authn.py): the client certificate the TLS layer verified, else the bearer
  token; without either, 401 except on /healthz, /livez, /readyz and /version (anonymous).
  Then impersonation, when `Impersonate-User`/`Impersonate-Group` ask and the caller may.
- Authorization has one place: `authorize()` asks the authorizer about the request's attributes
  before any verb runs (a refusal is 403 Forbidden naming the user, verb and resource).
- `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews` (kubectl auth can-i) is answered
  by the same authorizer, in JSON or in Kubernetes' protobuf encoding (which kubectl sends).
- Every resource request passes the api-server's one `Limiter` (limits.py, shared with the
  gRPC front end) after authorization: over a limit it is 429 with `Retry-After`.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import yaml
from aiohttp import web
from cryptography import x509
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from controlplane.apiserver import authn, caller, metrics, rbac, resourcemetrics, serviceaccount, warnings
from controlplane.apiserver.authn import Authenticator, Peer
from controlplane.apiserver.authorizer import Authorizer, kind_attributes
from controlplane.apiserver.filters import selected_name
from controlplane.apiserver.forward import Forwarder
from controlplane.apiserver.limits import Limiter, client_key
from controlplane.apiserver.rbac import Attributes
from controlplane.apiserver.registry import Registry
from controlplane.apiserver.rest import (
    accessreview,
    apply,
    dashboard,
    discovery,
    k8sproto,
    openapi,
    patch,
    streams,
    table,
)
from controlplane.apiserver.rest import status as st
from controlplane.apiserver.watchcache import BOOKMARK
from skiff import errors, kinds, labels, pki, tls
from skiff.convert import FieldError, format_timestamp, from_data, to_data
from skiff.identity import UserInfo
from skiff.tls import ServerTLS
from skiffpb.api.v1 import apiserver_pb2 as api
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("skiff.apiserver.http")

JSON = "application/json"
INITIAL_EVENTS_END = "k8s.io/initial-events-end"
PATCH_ATTEMPTS = 8
MAX_BODY = 16 * 1024 * 1024
# Request bodies read: JSON, YAML and the patch types (which are JSON, or YAML for apply).
READABLE = frozenset({JSON, "application/yaml", "application/json-patch+json", "application/merge-patch+json",
                      "application/strategic-merge-patch+json", "application/apply-patch+yaml",
                      "application/octet-stream", "text/plain"})


@dataclass(frozen=True)
class Target:
    """What a resource path names: /api/v1/namespaces/default/pods/web-1/status."""

    kind: kinds.Kind
    namespace: str = ""
    name: str = ""
    subresource: str = ""


# pods/exec: the WebSocket subprotocols served (kubectl offers v5 first) and the channels.
EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDOUT, STDERR, ERROR = 1, 2, 3

# Subresources created with POST on a named object.
POSTED_SUBRESOURCES = frozenset({"binding", "eviction", "token"})
# Subresources that connect to a pod (GET for WebSocket, POST for SPDY), authorized as creates.
CONNECT_SUBRESOURCES = frozenset({"exec", "attach", "portforward"})

TARGET = web.RequestKey("target", Target)
NAME = web.RequestKey("name", str)  # the object's name when it comes from the body (create)
WARNINGS = web.RequestKey("warnings", list)  # Warning headers of the response (unknown fields)


AUTHORIZER = web.AppKey("authorizer", Authorizer)
IMPERSONATOR = web.RequestKey("impersonator", UserInfo)  # the real user of an impersonated request


# What is served to GETs without credentials: what Kubernetes shows anyone
# (system:public-info-viewer), and kube-public, where a joining node reads the cluster's signed
# description before it can verify the api-server (it sends no secret then).
ANONYMOUS_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/version", "/api/v1/namespaces/kube-public",
                             *dashboard.PUBLIC_PATHS})


def peer_of(request: web.Request) -> Peer:
    """The request's verified client certificate (the TLS layer checked it against the CA) and
    bearer token."""
    user = None
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is not None:
        der = ssl_object.getpeercert(binary_form=True)
        if der:
            user = pki.user_of(x509.load_der_x509_certificate(der))
    return Peer(user, tls.bearer_token(list(request.headers.items())))


def authorize(request: web.Request, attrs: Attributes) -> None:
    """The one place of authorization: ForbiddenError unless the caller may do `attrs`."""
    authorizer = request.app.get(AUTHORIZER)
    if authorizer is not None:
        authorizer.check(caller.current(), attrs, impersonator=request.get(IMPERSONATOR))


def object_data(obj: Message) -> dict[str, Any]:
    """The JSON form of an API object, kind and apiVersion first."""
    kind = kinds.of_message(obj)
    data = to_data(obj)
    return {"kind": kind.kind, "apiVersion": kind.api_version,
            **{k: v for k, v in data.items() if k not in ("kind", "apiVersion")}}


def parse_object(data: Any, kind: kinds.Kind, *, unknown: list[str] | None = None) -> Message:
    if not isinstance(data, dict):
        raise st.BadRequest(f"the body must be a JSON object, a {kind.kind}")
    body_kind, body_version = data.get("kind"), data.get("apiVersion")
    if body_kind not in (None, "", kind.kind) or body_version not in (None, "", kind.api_version):
        raise st.BadRequest(f"the body is a {body_kind} ({body_version}); this path takes a {kind.kind} "
                            f"({kind.api_version})")
    try:
        return from_data(data, kind.message, unknown=unknown)
    except FieldError as exc:
        raise errors.InvalidError(f'{kind.kind} "{_name_of(data)}" is invalid: {exc}',
                                  causes=((exc.path, exc.problem),)) from exc


def _name_of(data: dict[str, Any]) -> str:
    meta = data.get("metadata")
    return str(meta.get("name", "")) if isinstance(meta, dict) else ""


def wants_table(accept: str) -> bool:
    """Whether the client asks for a Table (kubectl get); the first acceptable format wins."""
    for part in accept.split(","):
        params = {p.split("=", 1)[0].strip(): p.split("=", 1)[1].strip() for p in part.split(";")[1:] if "=" in p}
        media = part.split(";")[0].strip()
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io" and params.get("v") == "v1":
            return True
        if media in (JSON, "*/*", "application/*") and "as" not in params:
            return False
    return False


def _bool(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")


def _int(query: Any, name: str) -> int | None:
    value = query.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise st.BadRequest(f"{name}: expected an integer, got {value!r}") from None


def json_response(data: Any, *, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(data, separators=(",", ":")).encode(), status=status, content_type=JSON)


class KubeApi:
    def __init__(self, registry: Registry, forwarder: Forwarder, *, authenticator: Authenticator | None = None,
                 clock: Callable[[], float] = time.time, authorizer: Authorizer | None = None,
                 limiter: Limiter | None = None, tokens: serviceaccount.TokenAuthority | None = None) -> None:
        self.registry = registry
        self.forwarder = forwarder
        self.clock = clock
        self.resource_metrics = resourcemetrics.ResourceMetrics(registry, forwarder)
        self.tokens = tokens
        self.authenticator = authenticator or Authenticator(registry, insecure=True)
        self.authorizer = authorizer
        self.limiter = limiter or Limiter()

    # ------------------------------------------------------------------ routing

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._track, self._errors])
        if self.authorizer is not None:
            app[AUTHORIZER] = self.authorizer
        app.router.add_route("*", "/{tail:.*}", self._dispatch_collecting)
        return app

    async def _caller(self, request: web.Request) -> UserInfo:
        user = await self.authenticator.authenticate(
            peer_of(request), anonymous_ok=request.method == "GET" and request.path in ANONYMOUS_PATHS)
        as_user = request.headers.get("Impersonate-User", "")
        as_groups = request.headers.getall("Impersonate-Group", [])
        if self.authorizer is None or not (as_user or as_groups):
            return user
        request[IMPERSONATOR] = user
        return self.authorizer.impersonate(user, as_user, as_groups)

    async def _dispatch_collecting(self, request: web.Request) -> web.StreamResponse:
        with warnings.collecting():  # admission's warnings (Pod Security), sent by _respond
            return await self.dispatch(request)

    @web.middleware
    async def _track(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                     ) -> web.StreamResponse:
        """Every request counts once in the api-server's metrics (controlplane/apiserver/metrics.py)."""
        with metrics.track(self.request_info(request)) as tracked:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                tracked.code = exc.status
                raise
            tracked.code = response.status
            return response

    def request_info(self, request: web.Request) -> metrics.RequestInfo:
        """What a request is in kube-apiserver's terms (verb, resource, scope) for the metrics."""
        parts = [p for p in request.path.split("/") if p]
        method = request.method
        if parts == ["dashboard", dashboard.WATCH]:
            return metrics.RequestInfo("WATCH")  # long-running: not in flight, not in the latencies
        try:
            if len(parts) >= 2 and parts[:2] == ["api", "v1"]:
                target = self._target("v1", parts[2:])
            elif len(parts) >= 3 and parts[0] == "apis":
                target = self._target(f"{parts[1]}/{parts[2]}", parts[3:])
            else:
                return metrics.RequestInfo(method)
        except errors.SkiffError:
            return metrics.RequestInfo(method)
        if target.subresource in ("log", "exec", "attach", "portforward"):
            verb = "CONNECT"
        elif method == "GET" and not target.name:
            verb = "WATCH" if _bool(request.query.get("watch")) else "LIST"
        else:
            verb = method
        return metrics.request_info(verb, target.kind.resource, namespace=target.namespace, name=target.name,
                                    subresource=target.subresource)

    @web.middleware
    async def _errors(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                      ) -> web.StreamResponse:
        try:
            with caller.acting_as(await self._caller(request)):
                return await handler(request)
        except errors.SkiffError as exc:
            target = request.get(TARGET)
            resource = target.kind.resource if target is not None else ""
            group = target.kind.group if target is not None else ""
            name = request.get(NAME) or (target.name if target is not None else "")
            code, body = st.status(exc, resource=resource, group=group, name=name)
            response = json_response(body, status=code)
            response.headers.update(st.headers(exc))
            return response
        except web.HTTPException:
            raise
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            code, body = st.status(errors.InternalError(f"internal error serving {request.method} {request.path}"))
            return json_response(body, status=code)

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if request.method == "GET" and parts[:1] == ["dashboard"]:
            return await self.dashboard(request, parts[1:])
        if request.method == "GET":
            simple = self._simple_get(request, parts)
            if simple is not None:
                return simple
        if request.method == "POST" and parts == accessreview.PATH:
            authorize(request, Attributes("create", accessreview.RESOURCE, group=accessreview.GROUP))
            return await self.access_review(request)
        if request.method == "POST" and parts == accessreview.RULES_PATH:
            authorize(request, Attributes("create", accessreview.RULES_RESOURCE, group=accessreview.GROUP))
            return await self.rules_review(request)
        if len(parts) > 3 and parts[:3] == ["apis", resourcemetrics.GROUP, resourcemetrics.VERSION]:
            return await self.metrics_api(request, parts[3:])
        if len(parts) >= 2 and parts[:2] == ["api", "v1"]:
            return await self._resource(request, "v1", parts[2:])
        if len(parts) >= 3 and parts[0] == "apis":
            return await self._resource(request, f"{parts[1]}/{parts[2]}", parts[3:])
        raise errors.NotFoundError(f"the server could not find the requested resource ({request.path})")

    def _simple_get(self, request: web.Request, parts: list[str]) -> web.Response | None:
        """Health, version and discovery: non-resource requests, authorized by their path."""
        response = self._non_resource(request, parts)
        if response is not None:
            authorize(request, Attributes("get", path="/" + "/".join(parts)))
        return response

    def _non_resource(self, request: web.Request, parts: list[str]) -> web.Response | None:
        path = "/" + "/".join(parts)
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok", content_type="text/plain")
        if path == "/metrics":
            return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})
        if path == "/version":
            return json_response(discovery.version_info())
        if path == "/api":
            return json_response(discovery.api_versions(request.host))
        if path == "/apis":
            return json_response(discovery.api_group_list())
        doc: dict[str, Any] | None = None
        if path == "/openapi/v3":
            return json_response(openapi.root())
        if path.startswith("/openapi/v3/"):
            doc = openapi.gv_document(path.removeprefix("/openapi/v3/").removeprefix("api/").removeprefix("apis/"))
        elif path == "/api/v1":
            doc = discovery.resource_list("v1")
        elif len(parts) == 2 and parts[0] == "apis":
            doc = discovery.api_group(parts[1])
        elif len(parts) == 3 and parts[0] == "apis":
            doc = discovery.resource_list(f"{parts[1]}/{parts[2]}")
        else:
            return None
        if doc is None:
            raise errors.NotFoundError(f"the server could not find the requested resource ({path})")
        return json_response(doc)

    def _target(self, gv: str, rest: list[str]) -> Target:
        namespace = ""
        if len(rest) >= 3 and rest[0] == "namespaces" and not (len(rest) == 3 and rest[2] in ("status", "finalize")):
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise errors.NotFoundError("the server could not find the requested resource")
        kind = kinds.by_resource(rest[0])
        if kind is None or kind.api_version != gv:
            raise errors.NotFoundError(f'the server could not find the requested resource ({rest[0]} in {gv})')
        if namespace and not kind.namespaced:
            raise errors.NotFoundError(f"{kind.resource} are not namespaced")
        return Target(kind, namespace, rest[1] if len(rest) > 1 else "", rest[2] if len(rest) > 2 else "")

    async def _resource(self, request: web.Request, gv: str, rest: list[str]) -> web.StreamResponse:
        target = self._target(gv, rest)
        request[TARGET] = target
        q = request.query
        method = request.method
        if not target.name:
            verb = {"GET": "watch" if _bool(q.get("watch")) else "list", "POST": "create"}.get(method)
        elif method == "POST" and target.subresource in POSTED_SUBRESOURCES:
            verb = "create"
        elif method in ("GET", "POST") and target.subresource in CONNECT_SUBRESOURCES:
            verb = "create"  # as Kubernetes authorizes pods/exec, pods/attach and pods/portforward
        else:
            verb = {"GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method)
        if verb is None:
            raise errors.UnimplementedError(f"{method} is not supported on {request.path}")
        # A create names no object, as in Kubernetes (resourceNames cannot limit creates); a list or
        # watch for one name (fieldSelector metadata.name=) names it.
        name = "" if verb == "create" and not target.subresource else target.name
        if verb in ("list", "watch"):
            name = selected_name(q.get("fieldSelector", ""))
        authorize(request, kind_attributes(verb, target.kind, target.namespace, name, target.subresource))
        # Streams (logs, exec over WebSocket) are long-running: they hold no in-flight slot.
        counted = {"log": "logs", "exec": "exec", "attach": "attach",
                   "portforward": "portforward"}.get(target.subresource, verb)
        with self.limiter.admit(counted, client_key(caller.current(), request.remote or "")):
            return await self._verb(request, target, verb)

    async def _verb(self, request: web.Request, target: Target, verb: str) -> web.StreamResponse:
        if target.subresource:
            return await self._subresource(request, target, verb)
        if verb == "list":
            return await self.list(request, target)
        if verb == "watch":
            return await self.watch(request, target)
        if verb == "create":
            return await self.create(request, target)
        if verb == "get":
            return self._respond(request, target.kind, await self.registry.get(
                target.kind.resource, target.namespace, target.name))
        if verb == "update":
            return await self.update(request, target)
        if verb == "patch":
            return await self.patch(request, target)
        return await self.delete(request, target)

    # ------------------------------------------------------------------ responses

    def _respond(self, request: web.Request, kind: kinds.Kind, obj: Message, *, status: int = 200) -> web.Response:
        if wants_table(request.headers.get("Accept", "")):
            response = json_response(table.table(kind, [obj], now=self.clock(),
                                                 include_object=request.query.get("includeObject", "Metadata")),
                                     status=status)
        else:
            response = json_response(object_data(obj), status=status)
        for text in [*request.get(WARNINGS, []), *warnings.current()]:
            response.headers.add("Warning", '299 - "' + text.replace('"', '\\"') + '"')
        return response

    @staticmethod
    def _parse(request: web.Request, data: Any, kind: kinds.Kind) -> Message:
        """`data` as a `kind`, with Kubernetes' fieldValidation: Strict refuses unknown fields;
        Warn (the default, as in Kubernetes) drops them with a Warning header each; Ignore drops them."""
        validation = request.query.get("fieldValidation") or "Warn"
        if validation not in ("Strict", "Warn", "Ignore"):
            raise st.BadRequest(f"fieldValidation: must be Strict, Warn or Ignore, got {validation!r}")
        unknown: list[str] | None = None if validation == "Strict" else []
        obj = parse_object(data, kind, unknown=unknown)
        if unknown and validation == "Warn":
            request[WARNINGS] = [f'unknown field "{path}"' for path in unknown]
        return obj

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            raise st.BadRequest("the request has no body")
        if request.content_type == k8sproto.PROTOBUF:
            try:
                return k8sproto.decode(raw)
            except k8sproto.UnknownField as exc:
                raise st.UnsupportedMediaType(
                    f"{exc}: send this object as JSON (`kubectl create ... --dry-run=client -o yaml | "
                    "kubectl apply -f -`)") from exc
            except ValueError as exc:
                raise st.BadRequest(f"the protobuf body cannot be read: {exc}") from exc
        if request.content_type not in READABLE:
            raise st.UnsupportedMediaType(
                f"the body's content type {request.content_type!r} is not supported: Skiff reads JSON, YAML and "
                "Kubernetes' protobuf encoding of the kinds typed clients create")
        try:
            if request.content_type == "application/yaml" or request.content_type.endswith("+yaml"):
                return yaml.safe_load(raw)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as exc:
            raise st.BadRequest(f"the body is not valid JSON: {exc}") from exc

    # ------------------------------------------------------------------ verbs

    async def list(self, request: web.Request, target: Target) -> web.Response:
        q = request.query
        items, rv, token = await self.registry.list(
            target.kind.resource, namespace=target.namespace, label_selector=q.get("labelSelector", ""),
            field_selector=q.get("fieldSelector", ""), limit=_int(q, "limit") or 0,
            continue_token=q.get("continue", ""), resource_version=q.get("resourceVersion", ""))
        if wants_table(request.headers.get("Accept", "")):
            return json_response(table.table(target.kind, items, now=self.clock(), resource_version=rv,
                                             continue_token=token,
                                             include_object=q.get("includeObject", "Metadata")))
        meta: dict[str, Any] = {"resourceVersion": rv}
        if token:
            meta["continue"] = token
        return json_response({"kind": f"{target.kind.kind}List", "apiVersion": target.kind.api_version,
                              "metadata": meta, "items": [object_data(o) for o in items]})

    async def create(self, request: web.Request, target: Target) -> web.Response:
        body = await self._body(request)
        if isinstance(body, dict):
            request[NAME] = _name_of(body)
        obj = self._parse(request, body, target.kind)
        meta = obj.metadata  # type: ignore[attr-defined]
        if target.namespace and meta.namespace and meta.namespace != target.namespace:
            raise st.BadRequest(f'the namespace of the object ({meta.namespace}) does not match the namespace '
                                f'of the request ({target.namespace})')
        self._own(request, obj, None, target.kind)
        created = await self.registry.create(obj, namespace=target.namespace or meta.namespace,
                                             dry_run=request.query.get("dryRun") == "All")
        return self._respond(request, target.kind, created, status=201)

    async def update(self, request: web.Request, target: Target, *, status: bool = False) -> web.Response:
        obj = self._parse(request, await self._body(request), target.kind)
        self._check_identity(obj, target)
        if not status:
            old = await self.registry.get(target.kind.resource, target.namespace, target.name)
            self._own(request, obj, old, target.kind)
        updated = await self.registry.update(obj, status=status)
        return self._respond(request, target.kind, updated)

    # ------------------------------------------------------------------ field managers

    def _manager(self, request: web.Request) -> str:
        return request.query.get("fieldManager") or apply.default_manager(request.headers.get("User-Agent", ""))

    def _now(self) -> str:
        ts = Timestamp()
        ts.FromSeconds(int(self.clock()))
        return format_timestamp(ts)

    def _own(self, request: web.Request, obj: Message, old: Message | None, kind: kinds.Kind) -> None:
        """Record in `obj`'s managedFields that this request's manager set what it changed."""
        old_doc = object_data(old) if old is not None else None
        owners = apply.owners_of(old_doc) if old_doc is not None else []
        new_owners = apply.update(old_doc, object_data(obj), kind.message.DESCRIPTOR, manager=self._manager(request),
                                  owners=owners, now=self._now(), api_version=kind.api_version)
        set_owners(obj, new_owners)

    @staticmethod
    def _check_identity(obj: Message, target: Target) -> None:
        meta = obj.metadata  # type: ignore[attr-defined]
        if meta.name and meta.name != target.name:
            raise st.BadRequest(f'the name of the object ({meta.name}) does not match the name on the URL '
                                f'({target.name})')
        if target.namespace and meta.namespace and meta.namespace != target.namespace:
            raise st.BadRequest(f"the namespace of the object ({meta.namespace}) does not match the namespace "
                                f"on the URL ({target.namespace})")
        meta.name = target.name
        if target.namespace:
            meta.namespace = target.namespace

    def _patched(self, doc: dict[str, Any], body: Any, content_type: str, kind: kinds.Kind) -> Any:
        try:
            if content_type == "application/json-patch+json":
                return patch.json_patch(doc, body)
            if content_type == "application/merge-patch+json":
                return patch.merge_patch(doc, body)
            if content_type == "application/strategic-merge-patch+json":
                return patch.strategic_merge(doc, body, kind.message.DESCRIPTOR)
        except patch.PatchError as exc:
            # One cause naming the path: kubectl prints a Status' causes, and without one only
            # 'The deployments "web" is invalid' (upstream's own 422 for a JSON patch carries none).
            raise errors.InvalidError(f"the patch cannot be applied: {exc}",
                                      causes=((exc.path or "patch", str(exc)),)) from exc
        raise st.UnsupportedMediaType(f"the patch type {content_type!r} is not supported")

    async def patch(self, request: web.Request, target: Target, *, status: bool = False) -> web.Response:
        body = await self._body(request)
        content_type = request.content_type
        if content_type == "application/apply-patch+yaml":
            if status:
                raise st.UnsupportedMediaType("server-side apply of the status subresource is not supported")
            return await self.server_side_apply(request, target, body)
        for _ in range(PATCH_ATTEMPTS):
            current = await self.registry.get(target.kind.resource, target.namespace, target.name)
            doc = object_data(current)
            new_doc = self._patched(doc, body, content_type, target.kind)
            meta = new_doc.get("metadata") if isinstance(new_doc, dict) else None
            pinned = isinstance(meta, dict) and meta.get("resourceVersion") not in (None, doc["metadata"].get(
                "resourceVersion"))
            obj = self._parse(request, new_doc, target.kind)
            self._check_identity(obj, target)
            if not status:
                self._own(request, obj, current, target.kind)
            if not pinned:
                obj.metadata.resource_version = current.metadata.resource_version  # type: ignore[attr-defined]
            try:
                updated = await self.registry.update(obj, status=status)
            except errors.ConflictError:
                if pinned:
                    raise
                continue
            return self._respond(request, target.kind, updated)
        raise errors.ConflictError(f'{target.kind.resource} "{target.name}": the object kept changing while '
                                   "it was patched; try again")

    async def server_side_apply(self, request: web.Request, target: Target, config: Any) -> web.Response:
        """`PATCH` with `application/apply-patch+yaml`: the caller's field manager applies its
        configuration (rest/apply.py); a missing object is created."""
        manager = request.query.get("fieldManager", "")
        if not manager:
            raise st.BadRequest("PATCH with application/apply-patch+yaml requires fieldManager")
        if not isinstance(config, dict):
            raise st.BadRequest(f"the apply configuration must be an object, a {target.kind.kind}")
        if config.get("kind") != target.kind.kind or config.get("apiVersion") != target.kind.api_version:
            raise st.BadRequest(f"the apply configuration is a {config.get('kind')} ({config.get('apiVersion')}); "
                                f"this path takes a {target.kind.kind} ({target.kind.api_version})")
        name = _name_of(config)
        if name and name != target.name:
            raise st.BadRequest(f"the name of the object ({name}) does not match the name on the URL ({target.name})")
        force = _bool(request.query.get("force"))
        dry_run = request.query.get("dryRun") == "All"
        desc = target.kind.message.DESCRIPTOR
        for _ in range(PATCH_ATTEMPTS):
            try:
                current: Message | None = await self.registry.get(target.kind.resource, target.namespace, target.name)
            except errors.NotFoundError:
                current = None
            live = object_data(current) if current is not None else None
            try:
                new_doc, owners = apply.apply(live, config, desc, manager=manager,
                                              owners=apply.owners_of(live) if live else [], force=force,
                                              now=self._now())
            except apply.ConflictError as exc:
                raise st.FieldManagerConflict(str(exc), conflicts=tuple((c.field, c.manager)
                                                                        for c in exc.conflicts)) from exc
            except patch.PatchError as exc:
                raise errors.InvalidError(f"the apply configuration cannot be applied: {exc}") from exc
            new_doc.setdefault("kind", target.kind.kind)
            new_doc.setdefault("apiVersion", target.kind.api_version)
            if current is None:
                new_doc.pop("status", None)  # a status is written through the status subresource only
            obj = self._parse(request, new_doc, target.kind)
            self._check_identity(obj, target)
            set_owners(obj, owners)
            if current is None:
                authorize(request, kind_attributes("create", target.kind, target.namespace, ""))
                try:
                    created = await self.registry.create(obj, namespace=target.namespace, dry_run=dry_run)
                except errors.AlreadyExistsError:
                    continue
                return self._respond(request, target.kind, created, status=201)
            obj.metadata.resource_version = current.metadata.resource_version  # type: ignore[attr-defined]
            try:
                updated = await self.registry.update(obj)
            except errors.ConflictError:
                continue
            return self._respond(request, target.kind, updated)
        raise errors.ConflictError(f'{target.kind.resource} "{target.name}": the object kept changing while '
                                   "it was applied; try again")

    async def delete(self, request: web.Request, target: Target) -> web.Response:
        q = request.query
        options: dict[str, Any] = {}
        if request.can_read_body:
            raw = await request.read()
            if raw.strip() and request.content_type == k8sproto.PROTOBUF:
                try:
                    options = k8sproto.decode(raw)
                except ValueError as exc:
                    raise st.BadRequest(f"DeleteOptions: {exc}") from exc
            elif raw.strip():
                try:
                    options = json.loads(raw)
                except ValueError as exc:
                    raise st.BadRequest(f"DeleteOptions: not valid JSON: {exc}") from exc
        grace = options.get("gracePeriodSeconds")
        if grace is None:
            grace = _int(q, "gracePeriodSeconds")
        policy = options.get("propagationPolicy") or q.get("propagationPolicy", "")
        pre = options.get("preconditions") or {}
        preconditions = None
        if pre:
            preconditions = api.Preconditions(uid=pre.get("uid") or "", resource_version=pre.get("resourceVersion")
                                              or "")
        obj = await self.registry.delete(target.kind.resource, target.namespace, target.name,
                                         grace_period=grace, propagation_policy=policy,
                                         preconditions=preconditions)
        meta = obj.metadata  # type: ignore[attr-defined]
        if meta.HasField("deletion_timestamp"):
            return json_response(object_data(obj))  # still there: graceful deletion or finalizers
        return json_response(st.success(resource=target.kind.resource, group=target.kind.group, name=target.name,
                                        uid=meta.uid))

    # ------------------------------------------------------------------ watch

    async def watch(self, request: web.Request, target: Target) -> web.StreamResponse:
        q = request.query
        if target.name:  # the old /watch/ form of one object; clients use fieldSelector=metadata.name=NAME
            raise st.BadRequest("watch a single object with ?fieldSelector=metadata.name=NAME on its collection")
        as_table = wants_table(request.headers.get("Accept", ""))
        initial = _bool(q.get("sendInitialEvents"))
        events = self.registry.watch(
            target.kind.resource, namespace=target.namespace, label_selector=q.get("labelSelector", ""),
            field_selector=q.get("fieldSelector", ""), resource_version=q.get("resourceVersion", ""),
            send_initial_events=initial, allow_bookmarks=_bool(q.get("allowWatchBookmarks")),
            timeout_seconds=_int(q, "timeoutSeconds") or 0)
        response = web.StreamResponse(headers={"Content-Type": JSON, "Cache-Control": "no-cache"})
        started = False
        first_columns = True
        try:
            async for data in events:
                if not started:
                    await response.prepare(request)
                    started = True
                ev = api.WatchEvent.FromString(data)
                obj = kinds.unwrap(ev.object)
                if ev.type == BOOKMARK:
                    meta: dict[str, Any] = {"resourceVersion": obj.metadata.resource_version}  # type: ignore[attr-defined]
                    if initial:
                        meta["annotations"] = {INITIAL_EVENTS_END: "true"}
                        initial = False
                    out: dict[str, Any] = {"kind": target.kind.kind, "apiVersion": target.kind.api_version,
                                           "metadata": meta}
                elif as_table:
                    out = table.table(target.kind, [obj], now=self.clock(),
                                      resource_version=obj.metadata.resource_version,  # type: ignore[attr-defined]
                                      include_object=q.get("includeObject", "Metadata"), with_columns=first_columns)
                    first_columns = False
                else:
                    out = object_data(obj)
                await response.write(json.dumps({"type": ev.type, "object": out}, separators=(",", ":")).encode()
                                     + b"\n")
        except errors.SkiffError as exc:
            if not started and not isinstance(exc, errors.GoneError):
                raise  # refused before it started (a bad selector): a plain error response
            if not started:  # too old: as Kubernetes, a 200 stream whose one event is the 410 Status
                await response.prepare(request)
                started = True
            _, body = st.status(exc, resource=target.kind.resource, group=target.kind.group)
            await response.write(json.dumps({"type": "ERROR", "object": body}).encode() + b"\n")
        except ConnectionResetError:  # the client went away: nothing to tell it
            return response
        if not started:  # the watch ended (timeout) before any event: an empty stream
            await response.prepare(request)
        await response.write_eof()
        return response

    # ------------------------------------------------------------------ dashboard

    async def dashboard(self, request: web.Request, rest: builtins.list[str]) -> web.StreamResponse:
        """The dashboard's files and its one watch stream (rest/dashboard.py)."""
        if not rest and not request.path.endswith("/"):
            raise web.HTTPFound("/dashboard/")
        if rest == [dashboard.WATCH]:
            return await self.dashboard_watch(request)
        # The page's own files hold no cluster data: served to anyone, as the login form must be
        # (the data comes only through the watch and metrics.k8s.io, authorized per request).
        found = dashboard.asset("/".join(rest))
        if found is None:
            raise errors.NotFoundError(f"the server could not find the requested resource ({request.path})")
        data, content_type = found
        return web.Response(body=data, content_type=content_type, headers={"Cache-Control": "no-cache"})

    async def dashboard_watch(self, request: web.Request) -> web.StreamResponse:
        for resource in dashboard.RESOURCES:
            kind = kinds.by_resource(resource)
            assert kind is not None, resource
            authorize(request, kind_attributes("watch", kind))
        lines: asyncio.Queue[bytes] = asyncio.Queue(maxsize=10_000)

        def line(data: dict[str, Any]) -> bytes:
            return json.dumps(data, separators=(",", ":")).encode() + b"\n"

        async def follow(resource: str) -> None:
            while True:
                try:
                    items, rv, _ = await self.registry.list(resource)
                    await lines.put(line({"resource": resource, "type": "SYNC",
                                          "items": [object_data(o) for o in items]}))
                    async for data in self.registry.watch(resource, resource_version=rv):
                        ev = api.WatchEvent.FromString(data)
                        if ev.type != BOOKMARK:
                            await lines.put(line({"resource": resource, "type": ev.type,
                                                  "object": object_data(kinds.unwrap(ev.object))}))
                except errors.SkiffError as exc:
                    await lines.put(line({"resource": resource, "type": "ERROR", "message": str(exc)}))
                await asyncio.sleep(1.0)

        response = web.StreamResponse(headers={"Content-Type": JSON, "Cache-Control": "no-cache"})
        await response.prepare(request)
        tasks = [asyncio.ensure_future(follow(r)) for r in dashboard.RESOURCES]
        try:
            while True:
                await response.write(await lines.get())
        except ConnectionResetError:  # the page went away
            return response
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ metrics.k8s.io

    async def metrics_api(self, request: web.Request, rest: builtins.list[str]) -> web.Response:
        """metrics.k8s.io/v1beta1: nodes[/NAME], pods, namespaces/NS/pods[/NAME] (get and list)."""
        namespace = ""
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 2 or rest[0] not in ("nodes", "pods") or (namespace and rest[0] == "nodes"):
            raise errors.NotFoundError(f"the server could not find the requested resource ({request.path})")
        if request.method != "GET":
            raise errors.UnimplementedError(f"{request.method} is not supported on {request.path}")
        resource, name = rest[0], rest[1] if len(rest) > 1 else ""
        authorize(request, Attributes("get" if name else "list", resource, group=resourcemetrics.GROUP,
                                      namespace=namespace, name=name))
        selector = request.query.get("labelSelector", "")
        now = self.clock()
        if resource == "nodes":
            nodes = await self.resource_metrics.node_metrics(name=name, label_selector=selector)
            docs = [resourcemetrics.node_metrics_data(n, i, now=now) for n, i in nodes]
            kind = "NodeMetrics"
        else:
            pods = await self.resource_metrics.pod_metrics(namespace=namespace, name=name, label_selector=selector)
            docs = [resourcemetrics.pod_metrics_data(p, i, now=now) for p, i in pods]
            kind = "PodMetrics"
        return json_response(docs[0] if name else resourcemetrics.list_data(kind, docs))

    # ------------------------------------------------------------------ subresources

    async def _subresource(self, request: web.Request, target: Target, verb: str) -> web.StreamResponse:
        sub, kind = target.subresource, target.kind
        if sub == "status" and discovery.has_status(kind):
            if verb == "get":
                return self._respond(request, kind, await self.registry.get(kind.resource, target.namespace,
                                                                            target.name))
            if verb == "update":
                return await self.update(request, target, status=True)
            if verb == "patch":
                return await self.patch(request, target, status=True)
        if sub == "scale" and kind.resource in discovery.SCALABLE and verb in ("get", "update", "patch"):
            return await self.scale(request, target, verb)
        if sub == "log" and kind.resource == "pods" and verb == "get":
            return await self.logs(request, target)
        if sub == "exec" and kind.resource == "pods":
            if _bool(request.query.get("stdin")) or _bool(request.query.get("tty")):
                return await streams.remote_command(request, "exec", target.namespace, target.name, self.forwarder)
            return await self.exec(request, target)
        if sub == "attach" and kind.resource == "pods":
            return await streams.remote_command(request, "attach", target.namespace, target.name, self.forwarder)
        if sub == "portforward" and kind.resource == "pods":
            return await streams.port_forward(request, target.namespace, target.name, self.forwarder)
        if sub == "binding" and kind.resource == "pods" and verb == "create":
            return await self.binding(request, target)
        if sub == "eviction" and kind.resource == "pods" and verb == "create":
            return await self.eviction(request, target)
        if sub == "token" and kind.resource == "serviceaccounts" and verb == "create":
            return await self.token_request(request, target)
        raise errors.NotFoundError(f"the server could not find the requested resource ({kind.resource}/{sub}, "
                                   f"{request.method})")

    async def exec(self, request: web.Request, target: Target) -> web.StreamResponse:
        """`pods/NAME/exec` over WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io`), what kubectl
        exec speaks: each binary message is one channel byte (1 stdout, 2 stderr, 3 error) and its
        data. Without stdin and tty the command runs to completion in the container (the node
        agent's Exec); its output follows, then the error channel's Status: Success, or
        `NonZeroExitCode` with the exit code as kubectl reads it (so `kubectl exec POD -- sh -c
        'exit 3'` exits 3). With stdin or a tty the session is interactive (rest/streams.py)."""
        q = request.query
        command = q.getall("command", [])
        ws = web.WebSocketResponse(protocols=EXEC_PROTOCOLS)
        ready = ws.can_prepare(request)
        if not ready.ok or ready.protocol is None:
            raise st.BadRequest("pods/exec is served over WebSocket with the subprotocol v5.channel.k8s.io or "
                                "v4.channel.k8s.io (SPDY is not served)")
        await ws.prepare(request)
        try:
            result = await self.forwarder.exec(api.ExecRequest(namespace=target.namespace, pod=target.name,
                                                               container=q.get("container", ""), command=command))
            if result.stdout and q.get("stdout", "true") != "false":
                await ws.send_bytes(bytes([STDOUT]) + result.stdout)
            if result.stderr and q.get("stderr", "true") != "false":
                await ws.send_bytes(bytes([STDERR]) + result.stderr)
            outcome = exec_status(command, result.exit_code)
        except errors.SkiffError as exc:
            _, outcome = st.status(exc, resource="pods", name=target.name)
        await ws.send_bytes(bytes([ERROR]) + json.dumps(outcome).encode())
        await ws.close()
        return ws

    async def binding(self, request: web.Request, target: Target) -> web.Response:
        """`POST pods/NAME/binding` (v1 Binding): what a scheduler does; the registry's bind, as gRPC's."""
        data = await self._body(request)
        if not isinstance(data, dict) or data.get("kind") not in (None, "", "Binding"):
            raise st.BadRequest("the body must be a Binding (v1)")
        meta = data.get("metadata") or {}
        if meta.get("name") not in (None, "", target.name):
            raise st.BadRequest(f"the Binding names pod {meta.get('name')}, the path {target.name}")
        try:
            binding = from_data({k: v for k, v in data.items() if k in ("metadata", "target")}, t.Binding)
        except FieldError as exc:
            raise errors.InvalidError(f"Binding: {exc}", causes=((exc.path, exc.problem),)) from exc
        binding.metadata.name, binding.metadata.namespace = target.name, target.namespace
        await self.registry.bind(binding)
        return json_response(st.success(resource="pods", group="", name=target.name), status=201)

    async def eviction(self, request: web.Request, target: Target) -> web.Response:
        """`POST pods/NAME/eviction` (policy/v1 Eviction, what `kubectl drain` sends). Skiff has no
        PodDisruptionBudget kind, so no budget can refuse it: an eviction is the graceful delete its
        deleteOptions ask for (grace period, preconditions), as Kubernetes does when no budget
        selects the pod."""
        data = await self._body(request)
        if not isinstance(data, dict) or data.get("kind") not in (None, "", "Eviction"):
            raise st.BadRequest("the body must be an Eviction (policy/v1)")
        meta = data.get("metadata") or {}
        if meta.get("name") not in (None, "", target.name):
            raise st.BadRequest(f"the Eviction names pod {meta.get('name')}, the path {target.name}")
        options = data.get("deleteOptions") or {}
        pre = options.get("preconditions") or {}
        preconditions = api.Preconditions(uid=pre.get("uid") or "", resource_version=pre.get("resourceVersion")
                                          or "") if pre else None
        await self.registry.delete("pods", target.namespace, target.name,
                                   grace_period=options.get("gracePeriodSeconds"), preconditions=preconditions,
                                   propagation_policy=options.get("propagationPolicy") or "")
        return json_response(st.success(resource="pods", group="", name=target.name), status=201)

    async def token_request(self, request: web.Request, target: Target) -> web.Response:
        """`POST serviceaccounts/NAME/token` (authentication.k8s.io/v1 TokenRequest, what `kubectl
        create token` sends): a signed token for the account, bound to a pod when the request
        names one. Creating it is what is authorized (serviceaccounts/token create); reading the
        account and the pod behind it is the api-server's own business, as in Kubernetes."""
        if self.tokens is None:
            raise errors.NotFoundError("this api-server issues no service-account tokens "
                                       "(no --service-account-signing-key-file)")
        spec = serviceaccount.parse_token_request(await self._body(request))
        now, requester = self.clock(), caller.current()
        with caller.acting_as(authn.SELF):
            token, claims = await serviceaccount.issue_for(self.tokens, self.registry, namespace=target.namespace,
                                                           name=target.name, spec=spec, now=now, requester=requester)
        return json_response(serviceaccount.token_request_response(
            namespace=target.namespace, name=target.name, spec=spec, token=token, claims=claims,
            created=format_timestamp(Timestamp(seconds=claims.issued_at)),
            expires=format_timestamp(Timestamp(seconds=claims.expires_at))), status=201)

    async def scale(self, request: web.Request, target: Target, verb: str) -> web.Response:
        current = await self.registry.get(target.kind.resource, target.namespace, target.name)
        scale = scale_of(current)
        if verb == "get":
            return json_response(scale)
        body = await self._body(request)
        if verb == "patch":
            wanted = self._patched(scale, body, request.content_type, target.kind) \
                if request.content_type != "application/strategic-merge-patch+json" else patch.merge_patch(scale, body)
        else:
            wanted = body
        spec = wanted.get("spec") if isinstance(wanted, dict) else None
        replicas = spec.get("replicas") if isinstance(spec, dict) else None
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise errors.InvalidError("spec.replicas: must be a non-negative integer",
                                      causes=(("spec.replicas", "must be a non-negative integer"),))
        obj = type(current)()
        obj.CopyFrom(current)
        obj.spec.replicas = replicas  # type: ignore[attr-defined]
        self._own(request, obj, current, target.kind)
        rv = (wanted.get("metadata") or {}).get("resourceVersion") if verb == "update" else ""
        obj.metadata.resource_version = rv or current.metadata.resource_version  # type: ignore[attr-defined]
        return json_response(scale_of(await self.registry.update(obj)))

    async def access_review(self, request: web.Request) -> web.Response:
        """A SelfSubjectAccessReview: may the caller do what its spec asks? (kubectl auth can-i)"""
        raw = await request.read()
        try:
            review = accessreview.parse(raw, request.content_type)
        except ValueError as exc:
            raise st.BadRequest(f"SelfSubjectAccessReview: {exc}") from exc
        if self.authorizer is None:
            allowed, reason = True, "no authorizer: every request is allowed"
        else:
            decision = self.authorizer.review(caller.current(), review.attributes)
            allowed, reason = decision.allowed, decision.reason
        return json_response(accessreview.response(review, allowed, reason), status=201)

    async def rules_review(self, request: web.Request) -> web.Response:
        """A SelfSubjectRulesReview: the caller's RBAC rules in a namespace (kubectl auth can-i --list)."""
        try:
            namespace = accessreview.parse_rules_namespace(await request.read(), request.content_type)
        except ValueError as exc:
            raise st.BadRequest(f"SelfSubjectRulesReview: {exc}") from exc
        user = caller.current()
        if self.authorizer is None:
            return json_response(accessreview.rules_response(namespace, [], incomplete=True), status=201)
        rules = rbac.rules_for(user, namespace, self.authorizer.policy())
        # The Node authorizer's rights are not rules: a node's list is incomplete, as in Kubernetes.
        incomplete = bool(user.node_name) and "Node" in self.authorizer.modes
        return json_response(accessreview.rules_response(namespace, rules, incomplete=incomplete), status=201)

    async def logs(self, request: web.Request, target: Target) -> web.StreamResponse:
        q = request.query
        req = api.LogsRequest(namespace=target.namespace, pod=target.name, container=q.get("container", ""),
                              follow=_bool(q.get("follow")), tail_lines=_int(q, "tailLines") or 0,
                              previous=_bool(q.get("previous")))
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        started = False
        async for chunk in self.forwarder.logs(req):
            if not started:
                await response.prepare(request)
                started = True
            await response.write(chunk.data)
        if not started:
            await response.prepare(request)
        await response.write_eof()
        return response


def exec_status(command: list[str], exit_code: int) -> dict[str, Any]:
    """The Status on exec's error channel: Kubernetes' words, the exit code where kubectl reads it."""
    if exit_code == 0:
        return {"metadata": {}, "status": "Success"}
    return {"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
            "message": f"command terminated with non-zero exit code: error executing command {command}, "
                       f"exit code {exit_code}",
            "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]}}


def set_owners(obj: Message, owners: list[apply.Owner]) -> None:
    """`obj`'s metadata.managedFields := `owners`."""
    meta = obj.metadata  # type: ignore[attr-defined]
    del meta.managed_fields[:]
    for entry in apply.managed_fields(owners):
        meta.managed_fields.add().CopyFrom(from_data(entry, t.ManagedFieldsEntry))


def scale_of(obj: Message) -> dict[str, Any]:
    """The autoscaling/v1 Scale of a Deployment, ReplicaSet or StatefulSet."""
    assert isinstance(obj, t.Deployment | t.ReplicaSet | t.StatefulSet)
    meta = obj.metadata
    try:
        selector = labels.to_string(labels.from_label_selector(obj.spec.selector))
    except labels.SelectorError:
        selector = ""
    data_meta = to_data(meta)
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: data_meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                         if k in data_meta},
            "spec": {"replicas": obj.spec.replicas}, "status": {"replicas": obj.status.replicas, "selector": selector}}


async def start(registry: Registry, forwarder: Forwarder, listen: str, *, authenticator: Authenticator | None = None,
                server_tls: ServerTLS | None = None, authorizer: Authorizer | None = None,
                limiter: Limiter | None = None, tokens: serviceaccount.TokenAuthority | None = None,
                ) -> tuple[web.AppRunner, int]:
    """Serve the Kubernetes API on `listen` ("host:port"; port 0 picks one). (runner, port).

    With `server_tls` it is HTTPS (client certificates verified when sent); without, plain
    HTTP, and only an insecure authenticator (everyone the admin) makes sense with it."""
    host, _, port_text = listen.rpartition(":")
    authenticator = authenticator or Authenticator(registry, insecure=server_tls is None)
    # handler_cancellation: a watch whose client went away ends at once instead of at its next event.
    runner = web.AppRunner(KubeApi(registry, forwarder, authenticator=authenticator, authorizer=authorizer,
                                   limiter=limiter, tokens=tokens).app(),
                           access_log=None, handle_signals=False, handler_cancellation=True)
    await runner.setup()
    ssl_context = server_tls.ssl_context() if server_tls is not None else None
    site = web.TCPSite(runner, host.strip("[]") or None, int(port_text), reuse_address=True,
                       ssl_context=ssl_context)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise OSError(f"cannot listen on {listen} for the Kubernetes API: {exc}") from exc
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    port = sockets[0].getsockname()[1] if sockets else int(port_text)
    return runner, port

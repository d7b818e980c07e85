"""The default RBAC policy every api-server reconciles at start, as Kubernetes' bootstrap roles:
`cluster_roles()` and `cluster_role_bindings()` describe it, `plan_reconcile` (pure) says what to
create or update, `reconcile` applies it through the registry.

What must hold:
- Each component gets the least rights it needs, written down with the reason in
  docs/security.md (Authorization); the least-rights integration tests run the real components
  as these users with Node,RBAC on.
- An object that is missing is created; one carrying `rbac.authorization.kubernetes.io/autoupdate:
  "true"` is put back to the default (rules, subjects) when it differs; one where an operator set
  the annotation to "false" is left alone. Several api-servers reconciling at once is harmless
  (AlreadyExists and conflicts mean another one did it).
- Nodes get no RBAC binding: the Node authorizer (nodeauthz.py) is what lets them work.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

from google.protobuf.message import Message

from skiff import errors, identity
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("skiff.apiserver.bootstrappolicy")

RBAC_VERSION = "rbac.authorization.k8s.io/v1"
RBAC_GROUP = "rbac.authorization.k8s.io"
AUTOUPDATE = "rbac.authorization.kubernetes.io/autoupdate"
BOOTSTRAPPING = {"kubernetes.io/bootstrapping": "rbac-defaults"}

READ = ("get", "list", "watch")
WRITE = ("create", "update", "patch", "delete")
ALL_VERBS = ("*",)

# What `edit` and `view` cover: the namespaced kinds an application is made of.
CORE_APP = ("pods", "services", "endpoints", "configmaps", "serviceaccounts", "persistentvolumeclaims")
APPS_APP = ("deployments", "replicasets", "statefulsets", "daemonsets", "controllerrevisions")
BATCH_APP = ("jobs", "cronjobs")
SCALE = ("deployments/scale", "replicasets/scale", "statefulsets/scale")


def rule(verbs: Sequence[str], groups: Sequence[str] = ("",), resources: Sequence[str] = (),
         names: Sequence[str] = ()) -> t.PolicyRule:
    return t.PolicyRule(verbs=list(verbs), api_groups=list(groups), resources=list(resources),
                        resource_names=list(names))


def urls(verbs: Sequence[str], paths: Sequence[str]) -> t.PolicyRule:
    return t.PolicyRule(verbs=list(verbs), non_resource_urls=list(paths))


def _meta(name: str) -> t.ObjectMeta:
    return t.ObjectMeta(name=name, labels=BOOTSTRAPPING, annotations={AUTOUPDATE: "true"})


def cluster_role(name: str, rules: Iterable[t.PolicyRule]) -> t.ClusterRole:
    return t.ClusterRole(api_version=RBAC_VERSION, kind="ClusterRole", metadata=_meta(name), rules=list(rules))


def binding(name: str, role: str, *subjects: tuple[str, str]) -> t.ClusterRoleBinding:
    return t.ClusterRoleBinding(
        api_version=RBAC_VERSION, kind="ClusterRoleBinding", metadata=_meta(name),
        role_ref=t.RoleRef(api_group=RBAC_GROUP, kind="ClusterRole", name=role),
        subjects=[t.Subject(kind=kind, api_group=RBAC_GROUP, name=who) for kind, who in subjects])


EVENTS = rule(("create", "update", "patch", "get"), ("", "events.k8s.io"), ("events",))
LEADER_LEASES = rule(("get", "create", "update"), ("coordination.k8s.io",), ("leases",))
DISCOVERY_PATHS = ("/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*", "/version", "/version/")
HEALTH_PATHS = ("/healthz", "/livez", "/readyz", "/version", "/version/")


def view_rules() -> list[t.PolicyRule]:
    return [rule(READ, ("",), (*CORE_APP, "pods/log", "pods/status", "services/status", "events", "limitranges",
                               "resourcequotas", "resourcequotas/status", "namespaces", "namespaces/status")),
            rule(READ, ("apps",), (*APPS_APP, *SCALE, "deployments/status", "replicasets/status",
                                   "statefulsets/status", "daemonsets/status")),
            rule(READ, ("batch",), (*BATCH_APP, "jobs/status", "cronjobs/status")),
            rule(READ, ("coordination.k8s.io",), ("leases",)),
            # metrics-server's system:aggregated-metrics-reader, aggregated into view, edit and admin.
            rule(READ, ("metrics.k8s.io",), ("pods", "nodes"))]


def edit_rules() -> list[t.PolicyRule]:
    return [*view_rules(),
            rule((*READ, *WRITE), ("",), (*CORE_APP, "secrets", "pods/exec", "pods/log", "pods/eviction")),
            rule((*READ, *WRITE), ("apps",), (*APPS_APP, *SCALE)),
            rule((*READ, *WRITE), ("batch",), BATCH_APP),
            rule(("impersonate",), ("",), ("serviceaccounts",))]


def cluster_roles() -> list[t.ClusterRole]:
    return [
        cluster_role("cluster-admin", [rule(ALL_VERBS, ("*",), ("*",)), urls(ALL_VERBS, ("*",))]),
        cluster_role("admin", [*edit_rules(),
                               rule((*READ, *WRITE), (RBAC_GROUP,), ("roles", "rolebindings")),
                               rule((*READ, *WRITE), ("",), ("limitranges", "resourcequotas"))]),
        cluster_role("edit", edit_rules()),
        cluster_role("view", view_rules()),
        # What the dashboard shows (controlplane/apiserver/rest/dashboard.py), cluster-wide and
        # read-only: bind a user (a token's, docs/observability.md) to it to use the dashboard.
        cluster_role("dashboard-viewer", [
            rule(READ, ("",), ("nodes", "pods", "services", "endpoints", "events", "namespaces")),
            rule(READ, ("apps",), ("deployments", "statefulsets", "daemonsets", "replicasets")),
            rule(READ, ("metrics.k8s.io",), ("nodes", "pods")),
        ]),
        cluster_role("system:basic-user", [rule(("create",), ("authorization.k8s.io",),
                                                ("selfsubjectaccessreviews", "selfsubjectrulesreviews"))]),
        cluster_role("system:discovery", [urls(("get",), DISCOVERY_PATHS)]),
        cluster_role("system:public-info-viewer", [urls(("get",), HEALTH_PATHS)]),
        # A joining node reads the signed cluster description (with the CA) from the kube-public
        # namespace before it can verify the api-server, so without credentials (kubeadm's
        # cluster-info ConfigMap in kube-public is readable by anyone in the same way).
        cluster_role("skiff:cluster-info-viewer", [rule(("get",), ("",), ("namespaces",), ("kube-public",))]),
        # The controller manager runs the garbage collector and the quota controller, which read
        # every kind and update/delete owned objects of any kind; the rest of its writes are the
        # objects its controllers own. It creates no RBAC objects and reads no token it has not made.
        cluster_role("system:kube-controller-manager", [
            rule((*READ, "update", "patch", "delete"), ("*",), ("*",)),
            rule(("create",), ("",), ("pods", "services", "endpoints", "serviceaccounts", "events",
                                      # StatefulSets' volumeClaimTemplates; volumes a provisioner makes
                                      "persistentvolumeclaims", "persistentvolumes",
                                      # kube-root-ca.crt in every namespace (rootcacert.py)
                                      "configmaps")),
            rule(("create",), ("apps",), ("replicasets", "controllerrevisions")),
            rule(("create",), ("batch",), ("jobs",)),
            rule(("create",), ("coordination.k8s.io",), ("leases",)),
            rule(("create",), ("storage.k8s.io",), ("storageclasses",)),  # the default local-path class
            EVENTS,
        ]),
        # The scheduler reads pods and nodes, binds pods, records events, holds its lease; it reads
        # volume claims, volumes and storage classes for volume-aware scheduling (as Kubernetes').
        cluster_role("system:kube-scheduler", [
            rule(READ, ("",), ("pods", "nodes", "persistentvolumeclaims", "persistentvolumes")),
            # the volume binder writes the selected node onto WaitForFirstConsumer claims
            rule(("update", "patch"), ("",), ("persistentvolumeclaims",)),
            rule(("create",), ("",), ("pods/binding", "bindings")),
            rule(READ, ("storage.k8s.io",), ("storageclasses",)),
            LEADER_LEASES, EVENTS,
        ]),
        # The network proxy turns Services and Endpoints into rules; Nodes for NodePort addresses.
        # NetworkPolicies: the proxy's host also enforces them.
        cluster_role("system:node-proxier", [
            rule(READ, ("",), ("services", "endpoints", "nodes", "pods", "namespaces")),
            rule(READ, ("discovery.k8s.io",), ("endpointslices",)),
            rule(READ, ("networking.k8s.io",), ("networkpolicies",)),
            EVENTS,
        ]),
        # Cluster DNS answers from Services, Endpoints and Pods (pod A records, headless Services).
        cluster_role("system:coredns", [
            rule(READ, ("",), ("services", "endpoints", "pods", "namespaces")),
            rule(READ, ("discovery.k8s.io",), ("endpointslices",)),
        ]),
        # A joining node presents a bootstrap token and asks for its certificate.
        cluster_role("system:node-bootstrapper", [
            rule(("create", "get", "list", "watch"), ("certificates.k8s.io",), ("certificatesigningrequests",)),
        ]),
    ]


def cluster_role_bindings() -> list[t.ClusterRoleBinding]:
    return [
        binding("cluster-admin", "cluster-admin", ("Group", identity.MASTERS)),
        binding("system:basic-user", "system:basic-user", ("Group", identity.AUTHENTICATED)),
        binding("system:discovery", "system:discovery", ("Group", identity.AUTHENTICATED)),
        binding("system:public-info-viewer", "system:public-info-viewer", ("Group", identity.AUTHENTICATED),
                ("Group", identity.UNAUTHENTICATED)),
        binding("skiff:cluster-info-viewer", "skiff:cluster-info-viewer", ("Group", identity.AUTHENTICATED),
                ("Group", identity.UNAUTHENTICATED)),
        binding("system:kube-controller-manager", "system:kube-controller-manager",
                ("User", identity.CONTROLLER_MANAGER)),
        binding("system:kube-scheduler", "system:kube-scheduler", ("User", identity.SCHEDULER)),
        binding("system:node-proxier", "system:node-proxier", ("User", identity.NETPROXY)),
        binding("system:coredns", "system:coredns", ("User", identity.CLUSTERDNS)),
        binding("system:node-bootstrapper", "system:node-bootstrapper", ("Group", identity.BOOTSTRAPPERS)),
    ]


def defaults() -> list[t.ClusterRole | t.ClusterRoleBinding]:
    return [*cluster_roles(), *cluster_role_bindings()]


def _same(existing: Message, wanted: Message) -> bool:
    if isinstance(existing, t.ClusterRole) and isinstance(wanted, t.ClusterRole):
        return list(existing.rules) == list(wanted.rules)
    if isinstance(existing, t.ClusterRoleBinding) and isinstance(wanted, t.ClusterRoleBinding):
        return list(existing.subjects) == list(wanted.subjects) and existing.role_ref == wanted.role_ref
    return False


def plan_reconcile(existing: Mapping[tuple[str, str], Message],
                   wanted: Iterable[t.ClusterRole | t.ClusterRoleBinding]) -> list[tuple[str, Message]]:
    """[("create"|"update", object)] to bring `existing` ((kind, name) -> stored object) to `wanted`."""
    out: list[tuple[str, Message]] = []
    for obj in wanted:
        current = existing.get((obj.kind, obj.metadata.name))
        if current is None:
            out.append(("create", obj))
            continue
        if current.metadata.annotations.get(AUTOUPDATE, "true") == "false":  # type: ignore[attr-defined]
            continue
        if _same(current, obj):
            continue
        updated: Message = type(obj)()
        updated.CopyFrom(current)
        if isinstance(updated, t.ClusterRole) and isinstance(obj, t.ClusterRole):
            del updated.rules[:]
            updated.rules.extend(obj.rules)
        elif isinstance(updated, t.ClusterRoleBinding) and isinstance(obj, t.ClusterRoleBinding):
            if updated.role_ref != obj.role_ref:
                continue  # roleRef is immutable: an operator's binding of the same name stays
            del updated.subjects[:]
            updated.subjects.extend(obj.subjects)
        out.append(("update", updated))
    return out


async def reconcile(registry: object) -> int:
    """Create or update the default policy through `registry` (a Registry); the number of writes."""
    from controlplane.apiserver.registry import Registry

    assert isinstance(registry, Registry)
    existing: dict[tuple[str, str], Message] = {}
    for resource in ("clusterroles", "clusterrolebindings"):
        items, _, _ = await registry.list(resource)
        for item in items:
            existing[(item.kind or registry.kind(resource).kind, item.metadata.name)] = item  # type: ignore[attr-defined]
    writes = 0
    for action, obj in plan_reconcile(existing, defaults()):
        try:
            if action == "create":
                await registry.create(obj)
            else:
                await registry.update(obj)
            writes += 1
        except (errors.AlreadyExistsError, errors.ConflictError):
            pass  # another api-server reconciled it meanwhile
    if writes:
        log.info("bootstrap RBAC policy: %d object(s) created or updated", writes)
    return writes

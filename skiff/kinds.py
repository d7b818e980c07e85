"""The registry of API kinds: kind <-> resource <-> message class <-> apiVersion.

Every component finds out what a kind is here: whether it is namespaced, which field of
the `Object` oneof carries it, its short names for the CLI. Nothing else hard-codes them.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import Message

from skiffpb.api.v1 import types_pb2 as t


@dataclass(frozen=True)
class Kind:
    kind: str  # "Deployment"
    resource: str  # "deployments"
    api_version: str  # "apps/v1"
    message: type[Message]
    oneof_field: str  # field of skiff.api.v1.Object
    namespaced: bool
    short_names: tuple[str, ...] = ()
    singular: str = ""

    @property
    def group(self) -> str:
        return self.api_version.split("/")[0] if "/" in self.api_version else ""

    @property
    def qualified(self) -> str:
        """`deployment.apps` as kubectl prints it; `service` for the core group."""
        name = self.singular or self.kind.lower()
        return f"{name}.{self.group}" if self.group else name


KINDS: tuple[Kind, ...] = (
    Kind("Namespace", "namespaces", "v1", t.Namespace, "namespace", False, ("ns",), "namespace"),
    Kind("Node", "nodes", "v1", t.Node, "node", False, ("no",), "node"),
    Kind("Pod", "pods", "v1", t.Pod, "pod", True, ("po",), "pod"),
    Kind("ReplicaSet", "replicasets", "apps/v1", t.ReplicaSet, "replica_set", True, ("rs",), "replicaset"),
    Kind("Deployment", "deployments", "apps/v1", t.Deployment, "deployment", True, ("deploy",), "deployment"),
    Kind("Service", "services", "v1", t.Service, "service", True, ("svc",), "service"),
    Kind("Endpoints", "endpoints", "v1", t.Endpoints, "endpoints", True, ("ep",), "endpoints"),
    Kind("Lease", "leases", "coordination.k8s.io/v1", t.Lease, "lease", True, (), "lease"),
    Kind("Event", "events", "v1", t.Event, "event", True, ("ev",), "event"),
    # config-volumes
    Kind("ConfigMap", "configmaps", "v1", t.ConfigMap, "config_map", True, ("cm",), "configmap"),
    Kind("Secret", "secrets", "v1", t.Secret, "secret", True, (), "secret"),
    Kind("ServiceAccount", "serviceaccounts", "v1", t.ServiceAccount, "service_account", True, ("sa",),
         "serviceaccount"),
    Kind("LimitRange", "limitranges", "v1", t.LimitRange, "limit_range", True, ("limits",), "limitrange"),
    Kind("ResourceQuota", "resourcequotas", "v1", t.ResourceQuota, "resource_quota", True, ("quota",),
         "resourcequota"),
    # workloads
    Kind("Job", "jobs", "batch/v1", t.Job, "job", True, (), "job"),
    Kind("CronJob", "cronjobs", "batch/v1", t.CronJob, "cron_job", True, ("cj",), "cronjob"),
    Kind("DaemonSet", "daemonsets", "apps/v1", t.DaemonSet, "daemon_set", True, ("ds",), "daemonset"),
    Kind("StatefulSet", "statefulsets", "apps/v1", t.StatefulSet, "stateful_set", True, ("sts",), "statefulset"),
    Kind("ControllerRevision", "controllerrevisions", "apps/v1", t.ControllerRevision, "controller_revision", True,
         (), "controllerrevision"),
    # sec-rbac
    Kind("Role", "roles", "rbac.authorization.k8s.io/v1", t.Role, "role", True, (), "role"),
    Kind("ClusterRole", "clusterroles", "rbac.authorization.k8s.io/v1", t.ClusterRole, "cluster_role", False, (),
         "clusterrole"),
    Kind("RoleBinding", "rolebindings", "rbac.authorization.k8s.io/v1", t.RoleBinding, "role_binding", True, (),
         "rolebinding"),
    Kind("ClusterRoleBinding", "clusterrolebindings", "rbac.authorization.k8s.io/v1", t.ClusterRoleBinding,
         "cluster_role_binding", False, (), "clusterrolebinding"),
    # sec-tls
    Kind("CertificateSigningRequest", "certificatesigningrequests", "certificates.k8s.io/v1",
         t.CertificateSigningRequest, "certificate_signing_request", False, ("csr",), "certificatesigningrequest"),
    # netpol
    Kind("NetworkPolicy", "networkpolicies", "networking.k8s.io/v1", t.NetworkPolicy, "network_policy", True,
         ("netpol",), "networkpolicy"),
    # storage
    Kind("StorageClass", "storageclasses", "storage.k8s.io/v1", t.StorageClass, "storage_class", False, ("sc",),
         "storageclass"),
    Kind("PersistentVolume", "persistentvolumes", "v1", t.PersistentVolume, "persistent_volume", False, ("pv",),
         "persistentvolume"),
    Kind("PersistentVolumeClaim", "persistentvolumeclaims", "v1", t.PersistentVolumeClaim, "persistent_volume_claim",
         True, ("pvc",), "persistentvolumeclaim"),
)

# Binding is a subresource (pods/binding); it is a kind for Object's oneof only.
BINDING = Kind("Binding", "bindings", "v1", t.Binding, "binding", True, (), "binding")

_BY_KIND = {k.kind: k for k in (*KINDS, BINDING)}
_BY_RESOURCE = {k.resource: k for k in KINDS}
_BY_ONEOF = {k.oneof_field: k for k in (*KINDS, BINDING)}
_BY_MESSAGE = {k.message.DESCRIPTOR.full_name: k for k in (*KINDS, BINDING)}
_BY_ALIAS: dict[str, Kind] = {}
for _k in KINDS:
    for _alias in (_k.kind.lower(), _k.resource, _k.singular, *_k.short_names, _k.qualified,
                   f"{_k.resource}.{_k.group}" if _k.group else _k.resource):
        _BY_ALIAS[_alias] = _k


def by_kind(kind: str) -> Kind | None:
    return _BY_KIND.get(kind)


def by_resource(resource: str) -> Kind | None:
    return _BY_RESOURCE.get(resource)


def by_alias(name: str) -> Kind | None:
    """Resolve what a user types on the command line: `po`, `pods`, `Deployment`, `deploy.apps`."""
    return _BY_ALIAS.get(name.lower())


def of_message(msg: Message) -> Kind:
    return _BY_MESSAGE[msg.DESCRIPTOR.full_name]


def all_aliases() -> list[str]:
    return sorted(_BY_ALIAS)


def wrap(msg: Message) -> t.Object:
    """Put an API object into the `Object` oneof (a copy)."""
    obj = t.Object()
    getattr(obj, of_message(msg).oneof_field).CopyFrom(msg)
    return obj


def unwrap(obj: t.Object) -> Message:
    """The API object inside an `Object` (the same instance, not a copy)."""
    field = obj.WhichOneof("kind")
    if field is None:
        raise ValueError("empty Object: no kind set")
    msg: Message = getattr(obj, field)
    return msg


def kind_of_object(obj: t.Object) -> Kind:
    field = obj.WhichOneof("kind")
    if field is None:
        raise ValueError("empty Object: no kind set")
    return _BY_ONEOF[field]


def new(kind: Kind, name: str = "", namespace: str = "") -> Message:
    """A new, empty object of `kind` with apiVersion/kind set."""
    msg = kind.message()
    msg.api_version = kind.api_version  # type: ignore[attr-defined]
    msg.kind = kind.kind  # type: ignore[attr-defined]
    if name:
        msg.metadata.name = name  # type: ignore[attr-defined]
    if namespace and kind.namespaced:
        msg.metadata.namespace = namespace  # type: ignore[attr-defined]
    return msg

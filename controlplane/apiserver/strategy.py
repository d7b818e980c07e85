"""What Create, Update, UpdateStatus, Delete and Bind do to an object, as pure functions.

The registry reads the stored object, calls these to decide, and writes the result in one
compare-and-swap transaction; none of them touches the store, a clock or a random source
(the caller passes `now` and `uid`). What must hold, as in Kubernetes:
- Create stamps uid, creationTimestamp and generation 1, and resets server-owned status.
- Update takes metadata and spec from the request and status from the stored object;
  UpdateStatus takes only status from the request. uid, creationTimestamp and
  deletionTimestamp are never changed by either.
- generation goes up by one exactly when spec changes (or when graceful deletion starts).
- Deletion: propagationPolicy Orphan/Foreground adds the `orphan`/`foregroundDeletion`
  finalizer; an object with finalizers, or a pod bound to a node with a grace period, gets
  a deletionTimestamp instead of being removed; once it has no finalizers and a zero grace
  period it is removed (also when an update drops the last finalizer).
- Bind sets spec.nodeName once and the PodScheduled condition.
- A CertificateSigningRequest records who asked (spec.username/groups/uid, from the
  authenticated requester, never from the body), starts without status, and its spec never
  changes afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeVar

from google.protobuf.message import Message

from skiff import conditions, defaults, errors, kinds, names, qos
from skiff.clock import seconds_timestamp
from skiff.convert import FieldError
from skiff.identity import UserInfo
from skiffpb.api.v1 import types_pb2 as t

M = TypeVar("M", bound=Message)

MAX_OBJECT_BYTES = 1536 * 1024  # 1.5 MiB, etcd's default request limit
ORPHAN = "orphan"
FOREGROUND = "foregroundDeletion"
PROPAGATION_POLICIES = ("", "Orphan", "Background", "Foreground")
PROTECTED_NAMESPACES = frozenset(defaults.SYSTEM_NAMESPACES)
# Server-owned status is reset on create for these kinds (clients cannot create it).
STATUS_RESET_ON_CREATE = ("Pod", "Deployment", "ReplicaSet", "Service", "Namespace", "ResourceQuota",
                          "Job", "CronJob", "DaemonSet", "StatefulSet", "CertificateSigningRequest",
                          "PersistentVolume", "PersistentVolumeClaim")
# A Job's pods carry these labels and, unless manualSelector, its selector is the uid one.
JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
LEGACY_JOB_LABELS = ("controller-uid", "job-name")
GENERATE_NAME_ALPHABET = names.SAFE_ALPHANUMS


def copy(msg: M) -> M:
    out = type(msg)()
    out.CopyFrom(msg)
    return out


def meta_of(obj: Message) -> t.ObjectMeta:
    meta: t.ObjectMeta = obj.metadata  # type: ignore[attr-defined]
    return meta


def resource_name(kind: kinds.Kind) -> str:
    """`pods`, `deployments.apps`: how Kubernetes names a resource in error messages."""
    return f"{kind.resource}.{kind.group}" if kind.group else kind.resource


def has_spec(obj: Message) -> bool:
    return "spec" in obj.DESCRIPTOR.fields_by_name


def has_status(obj: Message) -> bool:
    return "status" in obj.DESCRIPTOR.fields_by_name


def check_size(obj: Message, kind: kinds.Kind) -> None:
    size = obj.ByteSize()
    if size > MAX_OBJECT_BYTES:
        raise errors.InvalidError(
            f'{resource_name(kind)} "{meta_of(obj).name or meta_of(obj).generate_name}" is too large: '
            f"{size} bytes, more than the limit of {MAX_OBJECT_BYTES} bytes (1.5 MiB)")


def invalid(kind: kinds.Kind, name: str, problems: list[FieldError]) -> errors.InvalidError:
    """One error line listing every problem: `Deployment "web" is invalid: spec.replicas: ...; ...`."""
    return errors.InvalidError(f'{kind.kind} "{name}" is invalid: ' + "; ".join(str(p) for p in problems),
                               causes=tuple((p.path, p.problem) for p in problems))


# ---------------------------------------------------------------------- create

def prepare_create(obj: Message, *, now: float, uid: str, requester: UserInfo | None = None) -> None:
    """Stamp server-set metadata and reset server-owned status, in place."""
    kind = kinds.of_message(obj)
    meta = meta_of(obj)
    meta.uid = uid
    meta.creation_timestamp.CopyFrom(seconds_timestamp(now))
    meta.resource_version = ""
    meta.ClearField("deletion_timestamp")
    meta.ClearField("deletion_grace_period_seconds")
    meta.generation = 1 if has_spec(obj) else 0
    if kind.kind in STATUS_RESET_ON_CREATE:
        obj.ClearField("status")  # type: ignore[arg-type]
    if isinstance(obj, t.Pod):
        obj.status.phase = "Pending"
        set_qos_class(obj)
    if isinstance(obj, t.Job):
        job_selector(obj)
    if isinstance(obj, t.CertificateSigningRequest):
        obj.spec.username = requester.name if requester is not None else ""
        obj.spec.uid = requester.uid if requester is not None else ""
        del obj.spec.groups[:]
        obj.spec.groups.extend(requester.groups if requester is not None else ())
    if isinstance(obj, t.PersistentVolume | t.PersistentVolumeClaim):
        obj.status.phase = "Pending"


def set_qos_class(pod: t.Pod) -> None:
    """status.qosClass from the pod's resources (set on create; resources never change after)."""
    pod.status.qos_class = qos.qos_class(pod.spec)


def job_selector(job: t.Job) -> None:
    """Kubernetes' Job PrepareForCreate: label the template with the Job's uid and name, and select
    by the uid, so two Jobs of the same name (one deleted, one new) never share pods."""
    if job.spec.manual_selector:
        return
    tmpl = job.spec.template.metadata.labels
    uid, name = job.metadata.uid, job.metadata.name
    tmpl.update({JOB_UID_LABEL: uid, JOB_NAME_LABEL: name, LEGACY_JOB_LABELS[0]: uid, LEGACY_JOB_LABELS[1]: name})
    job.spec.selector.Clear()
    job.spec.selector.match_labels[JOB_UID_LABEL] = uid


def create_problems(obj: Message) -> list[FieldError]:
    """Metadata a client may not set on create."""
    meta = meta_of(obj)
    out = []
    if meta.resource_version:
        out.append(FieldError("metadata.resourceVersion", "must not be set on create"))
    return out


# ---------------------------------------------------------------------- update

def prepare_update(old: M, new: M) -> M:
    """The object Update stores: metadata and spec from `new`, the rest from `old`."""
    out = copy(new)
    meta, old_meta = meta_of(out), meta_of(old)
    _keep_system_meta(meta, old_meta)
    if has_status(out):
        out.ClearField("status")  # type: ignore[arg-type]
        if old.HasField("status"):  # type: ignore[arg-type]
            out.status.CopyFrom(old.status)  # type: ignore[attr-defined]
    if isinstance(out, t.Service) and isinstance(old, t.Service):
        keep_allocated_values(old, out)
    if isinstance(out, t.CertificateSigningRequest) and isinstance(old, t.CertificateSigningRequest):
        out.spec.CopyFrom(old.spec)  # immutable: the requester and the request were fixed at create
    meta.generation = old_meta.generation
    if has_spec(out) and out.spec != old.spec:  # type: ignore[attr-defined]
        meta.generation = old_meta.generation + 1
    return out


def prepare_status_update(old: M, new: M) -> M:
    """The object UpdateStatus stores: `old` with the status of `new`."""
    out = copy(old)
    out.ClearField("status")  # type: ignore[arg-type]
    if new.HasField("status"):  # type: ignore[arg-type]
        out.status.CopyFrom(new.status)  # type: ignore[attr-defined]
    meta_of(out).resource_version = ""
    return out


def _keep_system_meta(meta: t.ObjectMeta, old: t.ObjectMeta) -> None:
    meta.uid = old.uid
    meta.creation_timestamp.CopyFrom(old.creation_timestamp)
    meta.generate_name = old.generate_name
    meta.resource_version = ""
    meta.ClearField("deletion_timestamp")
    meta.ClearField("deletion_grace_period_seconds")
    if old.HasField("deletion_timestamp"):
        meta.deletion_timestamp.CopyFrom(old.deletion_timestamp)
    if old.HasField("deletion_grace_period_seconds"):
        meta.deletion_grace_period_seconds = old.deletion_grace_period_seconds


def keep_allocated_values(old: t.Service, new: t.Service) -> None:
    """An update that omits clusterIP or a nodePort keeps the allocated ones (as Kubernetes does)."""
    if not new.spec.cluster_ip and old.spec.cluster_ip:
        new.spec.cluster_ip = old.spec.cluster_ip
        del new.spec.cluster_ips[:]
        new.spec.cluster_ips.extend(old.spec.cluster_ips)
    if new.spec.type != "NodePort":
        return
    for port in new.spec.ports:
        if port.node_port:
            continue
        for old_port in old.spec.ports:
            same = (old_port.port, old_port.protocol or "TCP") == (port.port, port.protocol or "TCP")
            if old_port.node_port and (same or (port.name and old_port.name == port.name)):
                port.node_port = old_port.node_port
                break


def update_problems(old: Message, new: Message) -> list[FieldError]:
    """Changes an Update may not make (immutable fields)."""
    out: list[FieldError] = []
    old_meta, meta = meta_of(old), meta_of(new)
    if old_meta.HasField("deletion_timestamp"):
        added = set(meta.finalizers) - set(old_meta.finalizers)
        if added:
            out.append(FieldError("metadata.finalizers",
                                  f"no new finalizers can be added while the object is being deleted: "
                                  f"{', '.join(sorted(added))}"))
    if isinstance(old, t.Pod) and isinstance(new, t.Pod):
        out.extend(_pod_update_problems(old, new))
    elif isinstance(old, t.Deployment | t.ReplicaSet) and isinstance(new, t.Deployment | t.ReplicaSet):
        if old.spec.selector != new.spec.selector:
            out.append(FieldError("spec.selector", "field is immutable"))
    elif isinstance(old, t.Job | t.DaemonSet | t.StatefulSet) and isinstance(new, t.Job | t.DaemonSet | t.StatefulSet):
        if old.spec.selector != new.spec.selector:
            out.append(FieldError("spec.selector", "field is immutable"))
        if isinstance(old, t.Job) and isinstance(new, t.Job):
            if old.spec.template != new.spec.template:
                out.append(FieldError("spec.template", "field is immutable"))
            if old.spec.completions != new.spec.completions or old.spec.completion_mode != new.spec.completion_mode:
                out.append(FieldError("spec.completions", "field is immutable"))
    elif isinstance(old, t.RoleBinding | t.ClusterRoleBinding) and isinstance(new, type(old)):
        if old.role_ref != new.role_ref:
            out.append(FieldError("roleRef", "cannot change roleRef"))
    elif isinstance(old, t.Service) and isinstance(new, t.Service):
        if old.spec.cluster_ip and new.spec.cluster_ip != old.spec.cluster_ip:
            out.append(FieldError("spec.clusterIP",
                                  f'field is immutable: "{old.spec.cluster_ip}" cannot change to '
                                  f'"{new.spec.cluster_ip}"; delete and recreate the Service to change it'))
    elif isinstance(old, t.ConfigMap | t.Secret) and isinstance(new, t.ConfigMap | t.Secret):
        out.extend(_immutable_config_problems(old, new))
    elif isinstance(old, t.PersistentVolumeClaim) and isinstance(new, t.PersistentVolumeClaim):
        a, b = copy(old.spec), copy(new.spec)
        if not a.volume_name:
            a.volume_name = b.volume_name  # binding sets it once
        if not a.HasField("storage_class_name") and b.HasField("storage_class_name"):
            a.storage_class_name = b.storage_class_name  # the default class is assigned once (setting
            # it from an unset one would give `a` an explicit "" that `b` does not have)
        a.resources.ClearField("requests")
        b.resources.ClearField("requests")
        if a != b:
            changed = sorted({f.json_name for f, _ in a.ListFields()} ^ {f.json_name for f, _ in b.ListFields()}
                             | {f.json_name for f, v in a.ListFields() if getattr(b, f.name) != v})
            out.append(FieldError("spec", "spec is immutable after creation except resources.requests "
                                          "(and volumeName and storageClassName while unset); changed: "
                                          + ", ".join(changed)))
    elif isinstance(old, t.StorageClass) and isinstance(new, t.StorageClass):
        for field in ("provisioner", "parameters", "reclaim_policy", "volume_binding_mode"):
            if getattr(old, field) != getattr(new, field):
                out.append(FieldError(_json_name(field), "field is immutable"))
    elif isinstance(old, t.Node) and isinstance(new, t.Node):
        if old.spec.pod_cidr and new.spec.pod_cidr != old.spec.pod_cidr:
            out.append(FieldError("spec.podCIDR", "may not change once set"))
    return out


def _immutable_config_problems(old: t.ConfigMap | t.Secret, new: t.ConfigMap | t.Secret) -> list[FieldError]:
    """An immutable ConfigMap/Secret keeps its data and stays immutable (delete and recreate to change)."""
    out = []
    if isinstance(old, t.Secret) and isinstance(new, t.Secret) and old.type != new.type:
        out.append(FieldError("type", "field is immutable"))
    if not (old.HasField("immutable") and old.immutable):
        return out
    if not (new.HasField("immutable") and new.immutable):
        out.append(FieldError("immutable", "field is immutable when `immutable` is set"))
    fields = ("data", "binary_data") if isinstance(old, t.ConfigMap) else ("data",)
    for field in fields:
        if dict(getattr(old, field)) != dict(getattr(new, field)):
            out.append(FieldError(_json_name(field), "field is immutable when `immutable` is set"))
    return out


def _json_name(field: str) -> str:
    head, *rest = field.split("_")
    return head + "".join(p.capitalize() for p in rest)


def _pod_update_problems(old: t.Pod, new: t.Pod) -> list[FieldError]:
    if old.spec.node_name != new.spec.node_name:
        return [FieldError("spec.nodeName", "may not be changed by an update; pods are assigned through Bind")]
    a, b = copy(old.spec), copy(new.spec)
    if len(a.containers) == len(b.containers):
        for ca, cb in zip(a.containers, b.containers, strict=True):
            ca.image = cb.image = ""
    old_tolerations = list(a.tolerations)
    if list(b.tolerations)[:len(old_tolerations)] == old_tolerations:
        del a.tolerations[:]
        del b.tolerations[:]
    if a != b:
        return [FieldError("spec", "pod updates may not change fields other than spec.containers[*].image "
                                   "and spec.tolerations (only additions to existing tolerations)")]
    return []


# ---------------------------------------------------------------------- delete

@dataclass(frozen=True)
class DeletePlan:
    action: Literal["delete", "update", "none"]
    obj: Message  # the object to store for "update"; the stored object otherwise


def plan_delete(old: Message, *, grace_period: int | None, propagation_policy: str, now: float) -> DeletePlan:
    """What a Delete request does to the stored object `old` (see the module docstring)."""
    if propagation_policy not in PROPAGATION_POLICIES:
        raise errors.InvalidError(f'propagationPolicy: unsupported value "{propagation_policy}": '
                                  'supported values are "Orphan", "Background", "Foreground"')
    if grace_period is not None and grace_period < 0:
        grace_period = 1  # as Kubernetes treats a negative grace period
    new = copy(old)
    meta, old_meta = meta_of(new), meta_of(old)
    finalizers = list(old_meta.finalizers)
    if propagation_policy == "Orphan":
        finalizers = [f for f in finalizers if f != FOREGROUND] + ([] if ORPHAN in finalizers else [ORPHAN])
    elif propagation_policy == "Foreground":
        finalizers = [f for f in finalizers if f != ORPHAN] + ([] if FOREGROUND in finalizers else [FOREGROUND])
    elif propagation_policy == "Background":
        finalizers = [f for f in finalizers if f not in (ORPHAN, FOREGROUND)]
    grace = _grace_period(old, grace_period)
    if old_meta.HasField("deletion_timestamp"):
        changed = finalizers != list(old_meta.finalizers)
        current = old_meta.deletion_grace_period_seconds
        if grace < current:
            meta.deletion_timestamp.CopyFrom(seconds_timestamp(now + grace))
            meta.deletion_grace_period_seconds = grace
            changed = True
        if not finalizers and meta.deletion_grace_period_seconds == 0:
            return DeletePlan("delete", old)
        if not changed:
            return DeletePlan("none", old)
        del meta.finalizers[:]
        meta.finalizers.extend(finalizers)
        return DeletePlan("update", new)
    if grace == 0 and not finalizers:
        return DeletePlan("delete", old)
    meta.deletion_timestamp.CopyFrom(seconds_timestamp(now + grace))
    meta.deletion_grace_period_seconds = grace
    del meta.finalizers[:]
    meta.finalizers.extend(finalizers)
    if has_spec(new):
        meta.generation += 1
    return DeletePlan("update", new)


def _grace_period(obj: Message, requested: int | None) -> int:
    if not isinstance(obj, t.Pod):
        return 0
    if not obj.spec.node_name or obj.status.phase in ("Succeeded", "Failed"):
        return 0  # nothing runs it: remove at once
    if requested is not None:
        return requested
    if obj.spec.HasField("termination_grace_period_seconds"):
        return int(obj.spec.termination_grace_period_seconds)
    return 30


def should_remove(obj: Message) -> bool:
    """An object being deleted with no finalizers left and no grace period pending is removed."""
    meta = meta_of(obj)
    return (meta.HasField("deletion_timestamp") and not meta.finalizers
            and meta.deletion_grace_period_seconds == 0)


def plan_namespace_delete(ns: t.Namespace, *, now: float) -> t.Namespace | None:
    """Mark a namespace Terminating; None when it already is. Protected namespaces refuse."""
    if ns.metadata.name in PROTECTED_NAMESPACES:
        raise errors.ForbiddenError(f'namespace "{ns.metadata.name}" is protected and may not be deleted')
    if ns.metadata.HasField("deletion_timestamp"):
        return None
    out = copy(ns)
    out.metadata.deletion_timestamp.CopyFrom(seconds_timestamp(now))
    out.metadata.deletion_grace_period_seconds = 0
    out.status.phase = "Terminating"
    return out


# ---------------------------------------------------------------------- bind

def plan_bind(pod: t.Pod, binding: t.Binding, *, now: float) -> t.Pod:
    """The pod after binding it to binding.target (a Node); ConflictError when it cannot be."""
    name = pod.metadata.name
    target = binding.target
    if target.kind not in ("", "Node"):
        raise errors.InvalidError(f'target.kind: must be "Node", got "{target.kind}"')
    if not target.name:
        raise errors.InvalidError("target.name: required: the node to bind the pod to")
    if binding.metadata.uid and binding.metadata.uid != pod.metadata.uid:
        raise errors.ConflictError(f'conflict: pods/binding "{name}": precondition failed: uid in binding '
                                   f"{binding.metadata.uid}, uid of the pod {pod.metadata.uid}")
    if pod.metadata.HasField("deletion_timestamp"):
        raise errors.ConflictError(f'conflict: pod "{name}" is being deleted, cannot be assigned to a node')
    if pod.spec.node_name:
        raise errors.PodAlreadyAssignedError(
            f'conflict: Operation cannot be fulfilled on pods/binding "{name}": '
            f'pod {name} is already assigned to node "{pod.spec.node_name}"')
    out = copy(pod)
    out.spec.node_name = target.name
    out.metadata.resource_version = ""
    scheduled = t.PodCondition(type="PodScheduled", status=conditions.TRUE,
                               last_transition_time=seconds_timestamp(now))
    conditions.set_condition(out.status.conditions, scheduled)
    return out


def generate_name(prefix: str, random_chars: str) -> str:
    """`web-` + 5 random characters, trimmed so the name stays within 63 characters."""
    return prefix[: 63 - len(random_chars)] + random_chars

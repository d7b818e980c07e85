"""Quota accounting: what an object adds to its namespace's ResourceQuota usage. Pure; shared by
the api-server's admission (controlplane/apiserver/admission.py) and the quota controller.

What must hold (Kubernetes' quota evaluators): pods count `pods`, `requests.cpu` (also `cpu`),
`requests.memory` (also `memory`), `limits.cpu`, `limits.memory` and the ephemeral-storage pair,
summed over their containers (init containers as skiff.podresources counts them); a finished
pod (Succeeded/Failed) or one being deleted counts nothing; a PersistentVolumeClaim counts
`requests.storage` and, per class, `<class>.storageclass.storage.k8s.io/requests.storage` and
`<class>.storageclass.storage.k8s.io/persistentvolumeclaims`; a Service of type NodePort counts
`services.nodeports` (one per port), a LoadBalancer also `services.loadbalancers` (its node
ports too: Skiff has no `allocateLoadBalancerNodePorts`); every namespaced object counts
`count/<resource>[.<group>]`, and the core kinds Kubernetes names so also `<resource>` (pods,
services, configmaps, secrets, ...).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fractions import Fraction

from google.protobuf.message import Message

from skiff import kinds, podresources, quantity
from skiffpb.api.v1 import types_pb2 as t

# Resources a pod adds to: (quota name, "requests"/"limits", resource).
POD_RESOURCES = (
    ("requests.cpu", "requests", "cpu"), ("cpu", "requests", "cpu"),
    ("requests.memory", "requests", "memory"), ("memory", "requests", "memory"),
    ("requests.ephemeral-storage", "requests", "ephemeral-storage"),
    ("limits.cpu", "limits", "cpu"), ("limits.memory", "limits", "memory"),
    ("limits.ephemeral-storage", "limits", "ephemeral-storage"),
)
# Kinds whose plain resource name is a quota (besides count/<resource>).
PLAIN_COUNTS = frozenset({"pods", "services", "configmaps", "secrets", "serviceaccounts", "resourcequotas",
                          "persistentvolumeclaims", "replicationcontrollers"})


def _q(text: str) -> Fraction:
    return quantity.parse(text)


def fmt(name: str, value: Fraction) -> str:
    resource = name.rsplit(".", 1)[-1]
    if resource == "cpu":
        return quantity.format_millis(int(value * 1000))
    if resource in ("memory", "ephemeral-storage", "storage"):
        return quantity.format_bytes(int(value))
    return str(int(value)) if value.denominator == 1 else str(float(value))


def counts(obj: Message) -> bool:
    """Whether an existing object still uses quota (finished or deleting pods do not)."""
    if isinstance(obj, t.Pod):
        return obj.status.phase not in ("Succeeded", "Failed") and not obj.metadata.HasField("deletion_timestamp")
    return True


def usage(obj: Message) -> dict[str, Fraction]:
    """What one object adds to its namespace's quota usage."""
    kind = kinds.of_message(obj)
    out: dict[str, Fraction] = {f"count/{kind.resource}" + (f".{kind.group}" if kind.group else ""): Fraction(1)}
    if kind.resource in PLAIN_COUNTS:
        out[kind.resource] = Fraction(1)
    if isinstance(obj, t.Pod):
        for quota_name, which, resource in POD_RESOURCES:
            def value(c: t.Container, which: str = which, resource: str = resource) -> Fraction:
                text = getattr(c.resources, which).get(resource)
                return _q(text) if text else Fraction(0)

            total = podresources.effective(obj.spec, value, Fraction(0))
            if total:
                out[quota_name] = total
    if isinstance(obj, t.Service):
        if obj.spec.type in ("NodePort", "LoadBalancer") and obj.spec.ports:
            out["services.nodeports"] = Fraction(len(obj.spec.ports))
        if obj.spec.type == "LoadBalancer":
            out["services.loadbalancers"] = Fraction(1)
    if isinstance(obj, t.PersistentVolumeClaim):
        requested = obj.spec.resources.requests.get("storage")
        if requested:
            out["requests.storage"] = _q(requested)
            if obj.spec.storage_class_name:
                out[f"{obj.spec.storage_class_name}.storageclass.storage.k8s.io/requests.storage"] = _q(requested)
                out[f"{obj.spec.storage_class_name}.storageclass.storage.k8s.io/persistentvolumeclaims"] = Fraction(1)
    return out


def namespace_usage(objs: Iterable[Message]) -> dict[str, Fraction]:
    out: dict[str, Fraction] = {}
    for obj in objs:
        if counts(obj):
            for k, v in usage(obj).items():
                out[k] = out.get(k, Fraction(0)) + v
    return out


def quota_status(quota: t.ResourceQuota, used: Mapping[str, Fraction]) -> t.ResourceQuotaStatus:
    """status.hard (a copy of spec.hard) and status.used for the resources the quota names."""
    out = t.ResourceQuotaStatus()
    out.hard.update(quota.spec.hard)
    for name in quota.spec.hard:
        out.used[name] = fmt(name, used.get(name, Fraction(0)))
    return out

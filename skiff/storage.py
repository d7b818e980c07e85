"""Persistent storage facts the api-server, the controllers, the scheduler and the node agent share.

Pure functions over StorageClass, PersistentVolume and PersistentVolumeClaim (Kubernetes'
semantics): which class a claim asks for, whether a volume can satisfy a claim, which volume
is the best match, on which nodes a volume can be used, and where the local-path provisioner
keeps a volume's directory.

What must hold:
- a claim with no storageClassName asks for the default class (the one annotated
  `storageclass.kubernetes.io/is-default-class: "true"`, the newest if several); an empty
  storageClassName asks for volumes without a class;
- a volume matches a claim when it is not bound to another claim, has the claim's class, every
  access mode the claim asks for, at least the requested capacity and the claim's selector's
  labels; among matches the smallest wins (ties: by name), as the PV controller does;
- a volume with node affinity is usable only on nodes its terms select (terms ORed,
  requirements ANDed; matchFields knows `metadata.name`);
- a local-path volume's directory is `<base>/<pv name>_<namespace>_<claim name>` on its node.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

from skiff import labels, quantity
from skiffpb.api.v1 import types_pb2 as t

DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
BETA_DEFAULT_CLASS_ANNOTATION = "storageclass.beta.kubernetes.io/is-default-class"
SELECTED_NODE_ANNOTATION = "volume.kubernetes.io/selected-node"
PROVISIONER_ANNOTATION = "volume.kubernetes.io/storage-provisioner"
PROVISIONED_BY_ANNOTATION = "pv.kubernetes.io/provisioned-by"
BOUND_BY_CONTROLLER_ANNOTATION = "pv.kubernetes.io/bound-by-controller"
BIND_COMPLETED_ANNOTATION = "pv.kubernetes.io/bind-completed"
HOSTNAME_LABEL = "kubernetes.io/hostname"
PVC_PROTECTION = "kubernetes.io/pvc-protection"
PV_PROTECTION = "kubernetes.io/pv-protection"
# Set by each node agent on its Node: where the local-path provisioner puts that node's volumes.
NODE_PATH_ANNOTATION = "storage.skiff.io/local-path-dir"

LOCAL_PATH_PROVISIONER = "skiff.io/local-path"
DEFAULT_CLASS_NAME = "local-path"
LOCAL_PATH_BASE = "/var/lib/skiff/storage"  # the provisioner's default; parameter `basePath` overrides it
WAIT_FOR_FIRST_CONSUMER = "WaitForFirstConsumer"
IMMEDIATE = "Immediate"


def default_class(classes: Iterable[t.StorageClass]) -> t.StorageClass | None:
    """The cluster's default StorageClass (the newest of several), or None."""
    marked = [sc for sc in classes if not sc.metadata.HasField("deletion_timestamp") and "true" in (
        sc.metadata.annotations.get(DEFAULT_CLASS_ANNOTATION),
        sc.metadata.annotations.get(BETA_DEFAULT_CLASS_ANNOTATION))]
    if not marked:
        return None
    return max(marked, key=lambda sc: (sc.metadata.creation_timestamp.seconds, sc.metadata.name))


def claim_class(pvc: t.PersistentVolumeClaim) -> str:
    """The class a claim asks for ("" = no class). An unset name is given the default at admission."""
    return pvc.spec.storage_class_name if pvc.spec.HasField("storage_class_name") else ""


def binding_mode(sc: t.StorageClass | None) -> str:
    if sc is None or not sc.HasField("volume_binding_mode"):
        return IMMEDIATE
    return sc.volume_binding_mode


def reclaim_policy(sc: t.StorageClass | None) -> str:
    if sc is None or not sc.HasField("reclaim_policy"):
        return "Delete"
    return sc.reclaim_policy


def storage_bytes(values: Mapping[str, str]) -> int:
    text = values.get("storage", "")
    if not text:
        return 0
    try:
        return quantity.to_bytes(text)
    except quantity.QuantityError:
        return 0


def bound_to(pv: t.PersistentVolume, pvc: t.PersistentVolumeClaim) -> bool:
    ref = pv.spec.claim_ref
    return (ref.name == pvc.metadata.name and ref.namespace == pvc.metadata.namespace
            and (not ref.uid or ref.uid == pvc.metadata.uid))


def volume_matches(pv: t.PersistentVolume, pvc: t.PersistentVolumeClaim) -> bool:
    """Whether `pv` can be bound to `pvc` (see the module docstring)."""
    if pv.metadata.HasField("deletion_timestamp") or pv.status.phase in ("Released", "Failed"):
        return False
    if pv.spec.claim_ref.name and not bound_to(pv, pvc):
        return False
    if pv.spec.storage_class_name != claim_class(pvc):
        return False
    if not set(pvc.spec.access_modes) <= set(pv.spec.access_modes):
        return False
    if storage_bytes(pv.spec.capacity) < storage_bytes(pvc.spec.resources.requests):
        return False
    sel = pvc.spec.selector
    if sel.match_labels or sel.match_expressions:
        try:
            if not labels.matches(labels.from_label_selector(sel), pv.metadata.labels):
                return False
        except labels.SelectorError:
            return False
    return True


def best_volume(pvc: t.PersistentVolumeClaim, volumes: Iterable[t.PersistentVolume], *,
                node: t.Node | None = None) -> t.PersistentVolume | None:
    """The volume to bind `pvc` to: one already pre-bound to it, else the smallest match (usable on
    `node` when given)."""
    candidates = [pv for pv in volumes if volume_matches(pv, pvc)
                  and (node is None or usable_on(pv, node.metadata.name, node.metadata.labels))]
    if not candidates:
        return None
    prebound = [pv for pv in candidates if pv.spec.claim_ref.name]
    if prebound:
        return prebound[0]
    return min(candidates, key=lambda pv: (storage_bytes(pv.spec.capacity), pv.metadata.name))


def _requirement_matches(req: t.NodeSelectorRequirement, value: str | None) -> bool:
    op = req.operator
    if op == "In":
        return value is not None and value in req.values
    if op == "NotIn":
        return value is None or value not in req.values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt") and value is not None and len(req.values) == 1:
        try:
            have, want = int(value), int(req.values[0])
        except ValueError:
            return False
        return have > want if op == "Gt" else have < want
    return False


def node_selector_matches(selector: t.NodeSelector, node_name: str, node_labels: Mapping[str, str]) -> bool:
    """Kubernetes' NodeSelector: any term matches; a term with no requirements matches nothing."""
    for term in selector.node_selector_terms:
        if not term.match_expressions and not term.match_fields:
            continue
        fields_ok = all(_requirement_matches(r, node_name if r.key == "metadata.name" else None)
                        for r in term.match_fields)
        if fields_ok and all(_requirement_matches(r, node_labels.get(r.key)) for r in term.match_expressions):
            return True
    return False


def usable_on(pv: t.PersistentVolume, node_name: str, node_labels: Mapping[str, str]) -> bool:
    if not pv.spec.node_affinity.HasField("required"):
        return True
    return node_selector_matches(pv.spec.node_affinity.required, node_name, node_labels)


def node_affinity_for(node_name: str) -> t.VolumeNodeAffinity:
    """The affinity of a volume that lives on one node (by its hostname label, as local volumes do)."""
    out = t.VolumeNodeAffinity()
    out.required.node_selector_terms.add().match_expressions.add(key=HOSTNAME_LABEL, operator="In",
                                                                  values=[node_name])
    return out


def volume_node(pv: t.PersistentVolume) -> str:
    """The one node a volume is pinned to by `kubernetes.io/hostname In [node]` ("" if not so pinned)."""
    terms = pv.spec.node_affinity.required.node_selector_terms
    if len(terms) != 1:
        return ""
    for req in terms[0].match_expressions:
        if req.key == HOSTNAME_LABEL and req.operator == "In" and len(req.values) == 1:
            return req.values[0]
    return ""


def local_path(base: str, pv_name: str, namespace: str, claim: str) -> str:
    return os.path.join(base, f"{pv_name}_{namespace}_{claim}")


def volume_path(pv: t.PersistentVolume) -> str:
    """The host directory of a volume Skiff can mount (local or hostPath); "" for any other source."""
    if pv.spec.HasField("local"):
        return pv.spec.local.path
    if pv.spec.HasField("host_path"):
        return pv.spec.host_path.path
    return ""


def provisioned_by_local_path(pv: t.PersistentVolume) -> bool:
    return pv.metadata.annotations.get(PROVISIONED_BY_ANNOTATION) == LOCAL_PATH_PROVISIONER


def pod_claims(spec: t.PodSpec) -> list[str]:
    """The claim names a pod spec uses, in volume order."""
    return [v.persistent_volume_claim.claim_name for v in spec.volumes if v.HasField("persistent_volume_claim")]


def claim_name_for(template: str, set_name: str, ordinal: int) -> str:
    """A StatefulSet's claim for one pod: `<template>-<set>-<ordinal>`."""
    return f"{template}-{set_name}-{ordinal}"


def default_storage_class() -> t.StorageClass:
    """The class a fresh cluster has: local-path, WaitForFirstConsumer, Delete, marked default."""
    sc = t.StorageClass(api_version="storage.k8s.io/v1", kind="StorageClass", provisioner=LOCAL_PATH_PROVISIONER,
                        reclaim_policy="Delete", volume_binding_mode=WAIT_FOR_FIRST_CONSUMER)
    sc.metadata.name = DEFAULT_CLASS_NAME
    sc.metadata.annotations[DEFAULT_CLASS_ANNOTATION] = "true"
    return sc


def access_modes_short(modes: Sequence[str]) -> str:
    """kubectl's ACCESS MODES column: RWO,ROX,RWX,RWOP."""
    short = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX", "ReadWriteOncePod": "RWOP"}
    return ",".join(short.get(m, m) for m in modes)

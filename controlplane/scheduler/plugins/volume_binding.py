"""VolumeBinding: a pod's PersistentVolumeClaims must be usable on the node (kube-scheduler's
VolumeBinding, reduced to what Skiff's storage offers).

What must hold:
- a claim that does not exist or is being deleted fits nowhere;
- a bound claim fits only the nodes its volume's node affinity selects (a local-path volume:
  its one node), so a pod whose data lives on a node goes back to that node;
- an unbound claim of an Immediate class fits nowhere until the PV controller binds it;
- an unbound claim of a WaitForFirstConsumer class fits a node with a matching Available
  volume usable there, or any node when its class has the local-path provisioner (which can
  make a volume on every node);
- after the decision and before the pod is bound, `pre_bind` writes the chosen node onto each
  unbound WaitForFirstConsumer claim (annotation volume.kubernetes.io/selected-node), which
  lets the PV controller bind or provision it there. The node agent starts the pod's
  containers only once its claims are Bound.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from controlplane.common import podutil
from controlplane.scheduler.framework import Status, unschedulable
from controlplane.scheduler.nodeinfo import NodeInfo, PodInfo
from skiff import storage
from skiff.client import ApiClient
from skiffpb.api.v1 import types_pb2 as t

NAME = "VolumeBinding"
AFFINITY_CONFLICT = "node(s) had volume node affinity conflict"
UNBOUND_IMMEDIATE = "pod has unbound immediate PersistentVolumeClaims"
NO_VOLUME = "node(s) didn't find available persistent volumes to bind"


@dataclass(frozen=True)
class StorageView:
    """What the plugin reads, from the scheduler's informers."""

    claim: Callable[[str, str], t.PersistentVolumeClaim | None]  # (namespace, name)
    volume: Callable[[str], t.PersistentVolume | None]
    volumes: Callable[[], Sequence[t.PersistentVolume]]
    storage_class: Callable[[str], t.StorageClass | None]


def claim_problem(pvc: t.PersistentVolumeClaim | None, name: str, *, node_name: str, node_labels: Mapping[str, str],
                  view: StorageView) -> Status | None:
    """Why `pvc` (claim `name` of the pod) cannot be used on the node, or None."""
    if pvc is None:
        return unschedulable(NAME, f'persistentvolumeclaim "{name}" not found', unresolvable=True)
    if pvc.metadata.HasField("deletion_timestamp"):
        return unschedulable(NAME, f'persistentvolumeclaim "{name}" is being deleted', unresolvable=True)
    if pvc.spec.volume_name:
        pv = view.volume(pvc.spec.volume_name)
        if pv is None:
            return unschedulable(NAME, f'persistentvolume "{pvc.spec.volume_name}" not found', unresolvable=True)
        if not storage.usable_on(pv, node_name, node_labels):
            return unschedulable(NAME, AFFINITY_CONFLICT, unresolvable=True)
        return None
    sc = view.storage_class(storage.claim_class(pvc))
    if storage.binding_mode(sc) != storage.WAIT_FOR_FIRST_CONSUMER:
        return unschedulable(NAME, UNBOUND_IMMEDIATE, unresolvable=True)
    assert sc is not None
    if sc.provisioner == storage.LOCAL_PATH_PROVISIONER:
        return None
    if any(storage.volume_matches(pv, pvc) and storage.usable_on(pv, node_name, node_labels)
           for pv in view.volumes()):
        return None
    return unschedulable(NAME, NO_VOLUME)


class VolumeBinding:
    name = NAME
    memoizable = False  # it reads claims and volumes from informers, not the node's state

    def __init__(self, view: StorageView) -> None:
        self.view = view

    def pre_filter(self, pod: PodInfo) -> bool:
        return bool(storage.pod_claims(pod.pod.spec))

    def filter(self, pod: PodInfo, node: NodeInfo) -> Status | None:
        namespace = pod.pod.metadata.namespace
        for name in storage.pod_claims(pod.pod.spec):
            status = claim_problem(self.view.claim(namespace, name), name, node_name=node.name,
                                   node_labels=node.labels, view=self.view)
            if status is not None:
                return status
        return None

    def claims_to_select(self, pod: t.Pod) -> list[t.PersistentVolumeClaim]:
        """The pod's unbound WaitForFirstConsumer claims that do not name the chosen node yet."""
        out = []
        for name in storage.pod_claims(pod.spec):
            pvc = self.view.claim(pod.metadata.namespace, name)
            if pvc is None or pvc.spec.volume_name:
                continue
            if storage.binding_mode(self.view.storage_class(storage.claim_class(pvc))) == \
                    storage.WAIT_FOR_FIRST_CONSUMER:
                out.append(pvc)
        return out

    async def pre_bind(self, client: ApiClient, pod: t.Pod, node: str) -> None:
        """Name the chosen node on the pod's unbound WaitForFirstConsumer claims."""
        for pvc in self.claims_to_select(pod):
            if pvc.metadata.annotations.get(storage.SELECTED_NODE_ANNOTATION) == node:
                continue
            new = podutil.copy(pvc)
            new.metadata.annotations[storage.SELECTED_NODE_ANNOTATION] = node
            await client.update(new)

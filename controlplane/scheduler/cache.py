"""The scheduler cache: per-node state, with pods we decided on ("assumed") counted at once.

What must hold:
- a pod's resources count on exactly one node, exactly once, whether the pod is assumed
  (we chose a node, the binding is in flight or the watch has not shown it yet) or confirmed
  (the informer delivered it with spec.nodeName);
- assume -> the informer shows it bound to that node: confirmed, nothing counted twice;
  assume -> bind fails: `forget` takes it off the node again (that pod's, by uid: never a
  newer pod of the same name assumed meanwhile);
- finished pods (Succeeded/Failed) and deleted pods free their resources;
- a pod may name a node the cache does not know yet (the node watch lags): it is kept on a
  placeholder and counts as soon as the node appears;
- every update is O(1) in the number of pods: no decision walks the cluster.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from controlplane.common import podutil
from controlplane.scheduler.nodeinfo import NodeInfo, PodInfo
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("skiff.scheduler.cache")


@dataclass(slots=True)
class _PodState:
    node: str
    info: PodInfo
    assumed: bool


class SchedulerCache:
    def __init__(self) -> None:
        self.nodes: dict[str, NodeInfo] = {}
        # Nodes that exist (not placeholders), in a stable order for round-robin search.
        self.node_list: list[NodeInfo] = []
        self._pods: dict[str, _PodState] = {}

    # ------------------------------------------------------------------ nodes

    def _info(self, name: str) -> NodeInfo:
        ni = self.nodes.get(name)
        if ni is None:
            ni = self.nodes[name] = NodeInfo(name)
        return ni

    def add_node(self, node: t.Node) -> None:
        ni = self._info(node.metadata.name)
        placeholder = ni.node is None
        ni.set_node(node)
        if placeholder:
            self.node_list.append(ni)

    update_node = add_node

    def remove_node(self, name: str) -> None:
        ni = self.nodes.get(name)
        if ni is None or ni.node is None:
            return
        self.node_list.remove(ni)
        if ni.pods:
            ni.node = None  # pods still point here until their deletions arrive
        else:
            del self.nodes[name]

    # ------------------------------------------------------------------ pods

    def is_assumed(self, key: str) -> bool:
        st = self._pods.get(key)
        return st is not None and st.assumed

    def node_of(self, key: str) -> str | None:
        st = self._pods.get(key)
        return st.node if st is not None else None

    def assume(self, info: PodInfo, node: str) -> None:
        if info.key in self._pods:
            raise ValueError(f"pod {info.key} is already in the cache (on {self._pods[info.key].node})")
        self._info(node).add_pod(info)
        self._pods[info.key] = _PodState(node, info, True)

    def forget(self, key: str, uid: str = "") -> None:
        """Undo an assumption (a failed bind). Confirmed pods are left alone, and with `uid` so is
        the assumption of another pod of the same name (binds are concurrent: the pod may have been
        deleted, recreated and assumed again while the failed bind was in flight)."""
        st = self._pods.get(key)
        if st is None or not st.assumed or (uid and st.info.uid != uid):
            return
        self._remove(key, st)

    def _remove(self, key: str, st: _PodState) -> None:
        del self._pods[key]
        ni = self.nodes.get(st.node)
        if ni is not None:
            ni.remove_pod(st.info)
            if ni.node is None and not ni.pods:
                del self.nodes[st.node]

    def add_pod(self, pod: t.Pod) -> None:
        """A pod the informer shows bound to a node (add, or update of an assigned pod)."""
        key = podutil.pod_key(pod)
        if podutil.is_terminal(pod):
            self.remove_pod(pod)
            return
        st = self._pods.get(key)
        node = pod.spec.node_name
        if st is not None:
            if st.node == node and st.info.uid == pod.metadata.uid:
                st.assumed = False
                st.info.pod = pod
                return
            self._remove(key, st)
        info = PodInfo.of(pod)
        self._info(node).add_pod(info)
        self._pods[key] = _PodState(node, info, False)

    def remove_pod(self, pod: t.Pod) -> None:
        key = podutil.pod_key(pod)
        st = self._pods.get(key)
        if st is not None:
            self._remove(key, st)

    @property
    def pod_count(self) -> int:
        return len(self._pods)

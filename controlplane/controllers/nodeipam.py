"""Node IPAM (the bare-metal part of cloud-controller-manager): pod CIDRs and node addresses.

What must hold:
- every node gets a podCIDR (spec.podCIDR and spec.podCIDRs) from --cluster-cidr, one
  --node-cidr-mask-size subnet each, never one that another node holds;
- the allocation map is rebuilt from the nodes' own podCIDRs before anything is allocated,
  so a restart (or a new leader) never hands out a subnet that is in use;
- a deleted node's subnet is released; a podCIDR set by someone else is respected (and
  reported with a CIDRNotAvailable event if it collides);
- the node's InternalIP, as its agent declared it in the `alpha.kubernetes.io/provided-node-ip`
  annotation (kubelet's --node-ip), is kept first in status.addresses.
"""

from __future__ import annotations

import logging

from controlplane.common import podutil
from controlplane.controllers.base import QueueController
from controlplane.controllers.cidrset import CidrError, CidrSet
from skiff import defaults
from skiff.client import ApiClient
from skiff.events import WARNING, Recorder
from skiff.informer import InformerFactory
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("skiff.controllers.nodeipam")

PROVIDED_NODE_IP = "alpha.kubernetes.io/provided-node-ip"


def plan_addresses(node: t.Node) -> list[t.NodeAddress] | None:
    """status.addresses with the provided InternalIP first, or None when nothing changes."""
    ip = node.metadata.annotations.get(PROVIDED_NODE_IP, "")
    if not ip:
        return None
    current = list(node.status.addresses)
    others = [a for a in current if a.type != "InternalIP"]
    if not any(a.type == "Hostname" for a in others):
        others.append(t.NodeAddress(type="Hostname", address=node.metadata.name))
    want = [t.NodeAddress(type="InternalIP", address=ip), *others]
    return None if want == current else want


class NodeIpamController(QueueController):
    name = "nodeipam"

    def __init__(self, client: ApiClient, factory: InformerFactory, *, recorder: Recorder,
                 cluster_cidr: str = defaults.CLUSTER_CIDR, mask_size: int = defaults.NODE_CIDR_MASK_SIZE) -> None:
        super().__init__()
        self.client = client
        self.recorder = recorder
        self.cidrs = CidrSet(cluster_cidr, mask_size)
        self.allocated: dict[str, str] = {}
        self.nodes = factory.informer(t.Node)
        self.nodes.add_handler(on_add=self.enqueue, on_update=self._updated, on_delete=self.enqueue)
        self._rebuilt = False

    def _updated(self, old: t.Node, new: t.Node) -> None:
        if (old.spec.pod_cidr != new.spec.pod_cidr or not new.spec.pod_cidr
                or old.metadata.annotations != new.metadata.annotations
                or old.status.addresses != new.status.addresses):
            self.enqueue(new)

    def rebuild(self) -> None:
        """Occupy every podCIDR the cached nodes hold (call once the node cache is synced)."""
        for node in self.nodes.list():
            cidr = node.spec.pod_cidr
            if not cidr:
                continue
            try:
                if self.cidrs.is_used(cidr):
                    log.warning("node %s: podCIDR %s is also used by another node", node.metadata.name, cidr)
                    continue
                self.cidrs.occupy(cidr)
                self.allocated[node.metadata.name] = cidr
            except CidrError as exc:
                log.warning("node %s: %s", node.metadata.name, exc)
        self._rebuilt = True

    async def run(self, *, workers: int = 1) -> None:
        await self.nodes.wait_synced()
        if not self._rebuilt:
            self.rebuild()
        await super().run(workers=workers)

    def _owner_of(self, cidr: str) -> str | None:
        for name, held in self.allocated.items():
            if held == cidr:
                return name
        return None

    async def sync(self, key: str) -> None:
        if not self._rebuilt:
            self.rebuild()
        name = key
        node = self.nodes.get(name)
        if node is None:
            cidr = self.allocated.pop(name, None)
            if cidr is not None:
                self.cidrs.release(cidr)
                log.info("released podCIDR %s of deleted node %s", cidr, name)
            return
        if node.spec.pod_cidr:
            self._adopt_existing(node)
        else:
            cidr = self.allocated.get(name)
            if cidr is None:
                try:
                    cidr = self.cidrs.allocate_next()
                except CidrError as exc:
                    self.recorder.event(node, WARNING, "CIDRNotAvailable",
                                        f"Node {name} status is now: CIDRNotAvailable ({exc})")
                    raise
                self.allocated[name] = cidr
            new = podutil.copy(node)
            new.spec.pod_cidr = cidr
            del new.spec.pod_cidrs[:]
            new.spec.pod_cidrs.append(cidr)
            node = await self.client.update(new)
            log.info("node %s: podCIDR %s", name, cidr)
        addresses = plan_addresses(node)
        if addresses is not None:
            new = podutil.copy(node)
            del new.status.addresses[:]
            new.status.addresses.extend(addresses)
            await self.client.update_status(new)

    def _adopt_existing(self, node: t.Node) -> None:
        name, cidr = node.metadata.name, node.spec.pod_cidr
        held = self.allocated.get(name)
        if held == cidr:
            return
        owner = self._owner_of(cidr)
        if owner is not None and owner != name:
            self.recorder.event(node, WARNING, "CIDRNotAvailable",
                                f"podCIDR {cidr} of node {name} is already allocated to node {owner}")
            return
        try:
            self.cidrs.occupy(cidr)
        except CidrError as exc:
            self.recorder.event(node, WARNING, "CIDRNotAvailable", f"Node {name}: {exc}")
            return
        if held is not None:
            self.cidrs.release(held)
        self.allocated[name] = cidr

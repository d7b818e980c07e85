"""The endpoints controller: each Service with a selector gets Endpoints listing its pods.

What must hold:
- ready pods with an IP are `addresses`, not-ready ones `notReadyAddresses` (all are
  `addresses` when the Service has publishNotReadyAddresses), each with the pod's nodeName and
  a targetRef to the pod, and the pod's hostname when the pod's subdomain is the Service's
  name (its DNS name under a headless Service); finished pods and pods being deleted are left out;
- a named targetPort is resolved per pod (pods of one Service may name different numbers);
  addresses with the same resolved ports share a subset; a pod that lacks a named port is
  left out of that port only;
- the Endpoints object is written only when its content changes, carries the Service's
  labels, and is deleted when the Service is; Services without a selector are not touched
  (their Endpoints are the user's);
- an update that only adds addresses (or moves them between ready and not ready the other
  way) is batched per Service (Kubernetes' --endpoint-updates-batch-period): written at once
  when none was written within the period, else at its end with everything since; an update
  that takes a ready address away is written at once (traffic must leave that pod now);
- the output is deterministic (subsets and addresses sorted), so an unchanged cluster never
  rewrites Endpoints;
- ExternalName Services have no Endpoints (they are a DNS alias only).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from controlplane.common import podutil
from controlplane.controllers.base import QueueController
from skiff import conditions, errors, labels
from skiff.client import ApiClient
from skiff.informer import InformerFactory, split_key
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("skiff.controllers.endpoints")

HEADLESS_LABEL = "service.kubernetes.io/headless"

# Pods by each of their labels, Services by each pair of their selector ("namespace/key=value").
# A selector matches only pods carrying every one of its pairs, so a Service's pods are among
# those of any one pair (the sync reads the smallest) and a pod's Services among those indexed
# under one of its labels. Without them a sync matched every pod of the namespace against the
# selector, and every pod event every Service of the namespace: at 30,000 pods and 1,000
# Services in one namespace that was a minute of the controller manager's loop per round of
# Endpoints syncs, and its informers fell minutes behind.
POD_LABEL_INDEX = "endpoints-pod-label"
SERVICE_SELECTOR_INDEX = "endpoints-service-selector"


def label_pair_keys(namespace: str, pairs: Mapping[str, str]) -> list[str]:
    return [f"{namespace}/{key}={value}" for key, value in pairs.items()]


def index_pod_labels(pod: t.Pod) -> list[str]:
    return label_pair_keys(pod.metadata.namespace, pod.metadata.labels)


def index_service_selector(svc: t.Service) -> list[str]:
    return label_pair_keys(svc.metadata.namespace, svc.spec.selector)


def resolve_target_port(port: t.ServicePort, pod: t.Pod) -> int | None:
    """The pod's port number for a Service port, or None when the pod has no such named port."""
    which = port.target_port.WhichOneof("value")
    if which is None or (which == "int_val" and port.target_port.int_val == 0):
        return port.port
    if which == "int_val":
        return port.target_port.int_val
    name = port.target_port.str_val
    protocol = port.protocol or "TCP"
    for container in pod.spec.containers:
        for cp in container.ports:
            if cp.name == name and (cp.protocol or "TCP") == protocol:
                return cp.container_port
    return None


def include_pod(pod: t.Pod) -> bool:
    return bool(pod.status.pod_ip) and not pod.metadata.HasField("deletion_timestamp") \
        and not podutil.is_terminal(pod)


def plan_subsets(service: t.Service, pods: Iterable[t.Pod]) -> list[t.EndpointSubset]:
    """The Endpoints subsets for `service` given the pods its selector matches."""
    groups: dict[tuple[tuple[str, int, str], ...], tuple[list[t.EndpointAddress], list[t.EndpointAddress]]] = {}
    for pod in pods:
        if not include_pod(pod):
            continue
        ports: list[tuple[str, int, str]] = []
        for sp in service.spec.ports:
            number = resolve_target_port(sp, pod)
            if number is not None:
                ports.append((sp.name, number, sp.protocol or "TCP"))
        if service.spec.ports and not ports:
            continue
        addr = t.EndpointAddress(ip=pod.status.pod_ip, node_name=pod.spec.node_name)
        if pod.spec.hostname and pod.spec.subdomain == service.metadata.name:
            addr.hostname = pod.spec.hostname
        addr.target_ref.CopyFrom(t.ObjectReference(kind="Pod", namespace=pod.metadata.namespace,
                                                   name=pod.metadata.name, uid=pod.metadata.uid))
        ready, not_ready = groups.setdefault(tuple(sorted(ports)), ([], []))
        publish = service.spec.publish_not_ready_addresses or conditions.is_pod_ready(pod)
        (ready if publish else not_ready).append(addr)
    subsets = []
    for ports_key in sorted(groups):
        ready, not_ready = groups[ports_key]
        subset = t.EndpointSubset()
        subset.addresses.extend(sorted(ready, key=_addr_key))
        subset.not_ready_addresses.extend(sorted(not_ready, key=_addr_key))
        subset.ports.extend(t.EndpointPort(name=n, port=p, protocol=proto) for n, p, proto in ports_key)
        subsets.append(subset)
    return subsets


def _addr_key(addr: t.EndpointAddress) -> tuple[tuple[int, ...] | str, str]:
    parts = addr.ip.split(".")
    ip_key: tuple[int, ...] | str = tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else addr.ip
    return ip_key, addr.target_ref.name


def ready_ips(subsets: Iterable[t.EndpointSubset]) -> set[tuple[str, int, str]]:
    """The (ip, port, protocol) triples that take traffic."""
    return {(a.ip, p.port, p.protocol) for s in subsets for a in s.addresses for p in s.ports or (t.EndpointPort(),)}


def endpoints_labels(service: t.Service) -> dict[str, str]:
    out = dict(service.metadata.labels)
    if service.spec.cluster_ip == "None":
        out[HEADLESS_LABEL] = ""
    return out


class EndpointsController(QueueController):
    name = "endpoints"

    def __init__(self, client: ApiClient, factory: InformerFactory, *, batch_period: float = 0.0) -> None:
        super().__init__(batch_period=batch_period)
        self.client = client
        self.services = factory.informer(t.Service)
        self.endpoints = factory.informer(t.Endpoints)
        self.pods = factory.informer(t.Pod)
        self.pods.add_indexer(POD_LABEL_INDEX, index_pod_labels)
        self.services.add_indexer(SERVICE_SELECTOR_INDEX, index_service_selector)
        self.services.add_handler(on_add=self.enqueue, on_update=lambda old, new: self.enqueue(new),
                                  on_delete=self.enqueue)
        self.endpoints.add_handler(on_delete=self.enqueue)
        self.pods.add_handler(on_add=self._pod_changed, on_update=self._pod_updated, on_delete=self._pod_changed)

    def _services_for(self, pod: t.Pod) -> list[t.Service]:
        candidates: dict[str, t.Service] = {}
        for pair in index_pod_labels(pod):
            for svc in self.services.by_index(SERVICE_SELECTOR_INDEX, pair):
                candidates[svc.metadata.name] = svc
        return [svc for svc in candidates.values()
                if labels.matches(labels.from_map(svc.spec.selector), pod.metadata.labels)]

    def _selected_pods(self, namespace: str, selector: Mapping[str, str]) -> list[t.Pod]:
        """The namespace's pods the (non-empty) selector matches, read from its rarest pair."""
        rarest = min(label_pair_keys(namespace, selector), key=lambda pair: self.pods.index_size(POD_LABEL_INDEX, pair))
        wanted = labels.from_map(selector)
        return [p for p in self.pods.by_index(POD_LABEL_INDEX, rarest) if labels.matches(wanted, p.metadata.labels)]

    def _pod_changed(self, pod: t.Pod) -> None:
        for svc in self._services_for(pod):
            self.enqueue(svc)

    def _pod_updated(self, old: t.Pod, new: t.Pod) -> None:
        if old.metadata.resource_version == new.metadata.resource_version:
            return
        relevant = (old.metadata.labels != new.metadata.labels or old.status.pod_ip != new.status.pod_ip
                    or conditions.is_pod_ready(old) != conditions.is_pod_ready(new)
                    or old.spec.node_name != new.spec.node_name
                    or include_pod(old) != include_pod(new))
        if not relevant:
            return
        services = {svc.metadata.name: svc for svc in (*self._services_for(old), *self._services_for(new))}
        for svc in services.values():
            self.enqueue(svc)

    async def sync(self, key: str) -> None:
        namespace, name = split_key(key)
        svc = self.services.get(name, namespace)
        if svc is None:
            if self.endpoints.get(name, namespace) is not None:
                try:
                    await self.client.delete(t.Endpoints, name, namespace)
                except errors.NotFoundError:
                    pass
            return
        if not svc.spec.selector or svc.metadata.HasField("deletion_timestamp") or svc.spec.type == "ExternalName":
            return
        pods = self._selected_pods(namespace, svc.spec.selector)
        subsets = plan_subsets(svc, sorted(pods, key=lambda p: p.metadata.name))
        want_labels = endpoints_labels(svc)
        current = self.endpoints.get(name, namespace)
        if current is None:
            ep = t.Endpoints(api_version="v1", kind="Endpoints")
            ep.metadata.name, ep.metadata.namespace = name, namespace
            ep.metadata.labels.update(want_labels)
            ep.subsets.extend(subsets)
            try:
                await self.client.create(ep)
            except errors.AlreadyExistsError:
                # The cache has not shown it yet; the next sync updates it.
                self.queue.add_after(key, 0.1)
            return
        if list(current.subsets) == subsets and dict(current.metadata.labels) == want_labels:
            return
        urgent = bool(ready_ips(current.subsets) - ready_ips(subsets)) or dict(current.metadata.labels) != want_labels
        if self.hold_write(key, urgent=urgent):
            return
        ep = podutil.copy(current)
        del ep.subsets[:]
        ep.subsets.extend(subsets)
        ep.metadata.labels.clear()
        ep.metadata.labels.update(want_labels)
        await self.client.update(ep)

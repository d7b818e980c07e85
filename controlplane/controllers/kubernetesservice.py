"""The `default/kubernetes` Service: the api-servers as endpoints of a Service every pod can name.

Kubernetes' api-servers keep this Service themselves; in Skiff the controller manager does,
from the api-server list it was started with (`--api-servers`, their gRPC endpoints, which it
probes) and their HTTPS endpoints (`--kubernetes-service-endpoints`, the Kubernetes REST API,
in the same order), which the Service leads to: `https://kubernetes.default.svc` reaches the
REST API from a pod, as in Kubernetes.

What must hold:
- the Service exists with the first address of the service CIDR as its ClusterIP (the address
  the allocator never hands out), port `https` 443, no selector (so the endpoints controller
  leaves its Endpoints alone), labels component=apiserver, provider=kubernetes; a Service of
  that name a user changed is left as it is, except that a missing one is recreated;
- its Endpoints list every api-server's HTTPS endpoint (its gRPC endpoint when no HTTPS one is
  given): the ones whose api-server answered the last probe in `addresses`, the others in
  `notReadyAddresses`; api-servers on different ports are different subsets, each with the
  named port `https`, so the proxy sends each connection to the right port; the Service's
  targetPort is the first one's port;
- Endpoints are written only when their content changes; the check repeats every
  `resync_period` (a dead api-server leaves `addresses` within that time).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Sequence

from controlplane.common import podutil
from controlplane.controllers.base import QueueController
from skiff import errors
from skiff.client import ApiClient, Client
from skiff.informer import InformerFactory
from skiff.tls import Credentials
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("skiff.controllers.kubernetesservice")

NAMESPACE, NAME = "default", "kubernetes"
KEY = f"{NAMESPACE}/{NAME}"
PORT_NAME = "https"
SERVICE_PORT = 443

Probe = Callable[[str], Awaitable[bool]]


def split_endpoint(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host, int(port)


def service_ip(service_cidr: str) -> str:
    """The ClusterIP of `default/kubernetes`: the first address of the service CIDR."""
    return str(ipaddress.IPv4Network(service_cidr, strict=False).network_address + 1) if service_cidr else ""


def desired_service(service_cidr: str, endpoints: Sequence[str]) -> t.Service:
    svc = t.Service(api_version="v1", kind="Service")
    svc.metadata.name, svc.metadata.namespace = NAME, NAMESPACE
    svc.metadata.labels.update({"component": "apiserver", "provider": "kubernetes"})
    svc.spec.cluster_ip = service_ip(service_cidr)
    port = svc.spec.ports.add(name=PORT_NAME, protocol="TCP", port=SERVICE_PORT)
    port.target_port.int_val = split_endpoint(endpoints[0])[1] if endpoints else SERVICE_PORT
    return svc


def plan_subsets(api_servers: Sequence[str], healthy: set[str]) -> list[t.EndpointSubset]:
    """One subset per api-server port; healthy api-servers ready, the others not ready."""
    by_port: dict[int, tuple[list[str], list[str]]] = {}
    for endpoint in api_servers:
        host, port = split_endpoint(endpoint)
        ready, not_ready = by_port.setdefault(port, ([], []))
        (ready if endpoint in healthy else not_ready).append(host)
    out = []
    for port in sorted(by_port):
        ready, not_ready = by_port[port]
        subset = t.EndpointSubset()
        subset.addresses.extend(t.EndpointAddress(ip=ip) for ip in sorted(set(ready)))
        subset.not_ready_addresses.extend(t.EndpointAddress(ip=ip) for ip in sorted(set(not_ready)))
        subset.ports.add(name=PORT_NAME, port=port, protocol="TCP")
        out.append(subset)
    return out


async def version_probe(endpoint: str, *, credentials: Credentials | None = None) -> bool:
    """Whether the api-server at `endpoint` answers a Version call within 2 s."""
    client = Client([endpoint], timeout=2.0, credentials=credentials)
    try:
        await client.version()
        return True
    except (TimeoutError, errors.SkiffError, OSError):
        return False
    finally:
        await client.close()


class KubernetesServiceController(QueueController):
    name = "kubernetesservice"

    def __init__(self, client: ApiClient, factory: InformerFactory, *, api_servers: Sequence[str],
                 service_cidr: str, https_endpoints: Sequence[str] = (), probe: Probe = version_probe,
                 resync_period: float = 10.0) -> None:
        super().__init__()
        self.client = client
        self.api_servers = [a for a in api_servers if a]
        served = [a for a in https_endpoints if a]
        if served and len(served) != len(self.api_servers):
            raise ValueError(f"{len(served)} HTTPS endpoints for {len(self.api_servers)} api-servers: "
                             "give one per api-server, in the same order")
        # api-server (probed) -> what the Service leads to
        self.targets = dict(zip(self.api_servers, served or self.api_servers, strict=True))
        self.service_cidr = service_cidr
        self.probe = probe
        self.resync_period = resync_period
        self.services = factory.informer(t.Service)
        self.endpoints = factory.informer(t.Endpoints)
        for inf in (self.services, self.endpoints):
            inf.add_handler(on_add=self._maybe, on_update=lambda _old, new: self._maybe(new), on_delete=self._maybe)
        self.queue.add(KEY)

    def _maybe(self, obj: t.Service | t.Endpoints) -> None:
        if (obj.metadata.namespace, obj.metadata.name) == (NAMESPACE, NAME):
            self.queue.add(KEY)

    async def sync(self, key: str) -> None:
        try:
            await self._sync()
        finally:
            self.queue.add_after(KEY, self.resync_period)

    async def _sync(self) -> None:
        if not self.api_servers:
            return
        if self.services.get(NAME, NAMESPACE) is None:
            try:
                await self.client.create(desired_service(self.service_cidr, list(self.targets.values())))
                log.info("created Service %s", KEY)
            except errors.AlreadyExistsError:
                pass
        results = await asyncio.gather(*(self.probe(a) for a in self.api_servers))
        healthy = {self.targets[a] for a, ok in zip(self.api_servers, results, strict=True) if ok}
        subsets = plan_subsets(list(self.targets.values()), healthy)
        current = self.endpoints.get(NAME, NAMESPACE)
        if current is None:
            ep = t.Endpoints(api_version="v1", kind="Endpoints")
            ep.metadata.name, ep.metadata.namespace = NAME, NAMESPACE
            ep.subsets.extend(subsets)
            try:
                await self.client.create(ep)
            except errors.AlreadyExistsError:
                pass
            return
        if list(current.subsets) == subsets:
            return
        ep = podutil.copy(current)
        del ep.subsets[:]
        ep.subsets.extend(subsets)
        await self.client.update(ep)

"""default/kubernetes: the Service and its api-server Endpoints (pure plan, and syncs over MemoryApi)."""

from __future__ import annotations

import pytest

from controlplane.controllers.kubernetesservice import (
    KEY,
    KubernetesServiceController,
    desired_service,
    plan_subsets,
    service_ip,
)
from skiffpb.api.v1 import types_pb2 as t
from tests.unit.controlplane.harness import Cluster

LAB = ["10.77.0.10:6443", "10.77.0.10:6444", "10.77.0.10:6445"]


def view(subsets: list[t.EndpointSubset]) -> list[tuple[int, list[str], list[str]]]:
    return [(s.ports[0].port, [a.ip for a in s.addresses], [a.ip for a in s.not_ready_addresses]) for s in subsets]


@pytest.mark.parametrize(("servers", "healthy", "want"), [
    (LAB, set(LAB), [(6443, ["10.77.0.10"], []), (6444, ["10.77.0.10"], []), (6445, ["10.77.0.10"], [])]),
    (LAB, {LAB[1]}, [(6443, [], ["10.77.0.10"]), (6444, ["10.77.0.10"], []), (6445, [], ["10.77.0.10"])]),
    (["10.0.0.2:6443", "10.0.0.1:6443"], {"10.0.0.2:6443"}, [(6443, ["10.0.0.2"], ["10.0.0.1"])]),
    (["10.0.0.2:6443", "10.0.0.1:6443"], {"10.0.0.2:6443", "10.0.0.1:6443"}, [(6443, ["10.0.0.1", "10.0.0.2"], [])]),
], ids=["one-host-three-ports", "one-answering", "two-hosts-one-down", "two-hosts"])
def test_plan_subsets(servers: list[str], healthy: set[str], want: list[tuple[int, list[str], list[str]]]) -> None:
    subsets = plan_subsets(servers, healthy)
    assert view(subsets) == want
    assert {p.name for s in subsets for p in s.ports} == {"https"}


@pytest.mark.parametrize(("cidr", "ip"), [("10.96.0.0/12", "10.96.0.1"), ("172.20.0.0/16", "172.20.0.1")],
                         ids=["default", "other"])
def test_service_ip_is_the_first_address(cidr: str, ip: str) -> None:
    assert service_ip(cidr) == ip
    svc = desired_service(cidr, LAB)
    assert (svc.spec.cluster_ip, svc.spec.ports[0].port, svc.spec.ports[0].target_port.int_val) == (ip, 443, 6443)
    assert not svc.spec.selector


async def test_sync_creates_the_service_and_follows_api_server_health(cluster: Cluster) -> None:
    up = set(LAB)

    async def probe(endpoint: str) -> bool:
        return endpoint in up

    ctrl = KubernetesServiceController(cluster.api, cluster.factory, api_servers=LAB, service_cidr="10.96.0.0/12",
                                       probe=probe)
    await cluster.start()
    await ctrl.sync(KEY)
    await cluster.settle()
    svc = await cluster.api.get(t.Service, "kubernetes", "default")
    assert svc.spec.cluster_ip == "10.96.0.1"
    ep = await cluster.api.get(t.Endpoints, "kubernetes", "default")
    assert view(list(ep.subsets)) == [(6443, ["10.77.0.10"], []), (6444, ["10.77.0.10"], []),
                                      (6445, ["10.77.0.10"], [])]
    await ctrl.sync(KEY)
    await cluster.settle()
    assert cluster.writes("update", "endpoints") == 0, "no change, no write"
    up.discard(LAB[0])
    await ctrl.sync(KEY)
    await cluster.settle()
    ep = await cluster.api.get(t.Endpoints, "kubernetes", "default")
    assert view(list(ep.subsets))[0] == (6443, [], ["10.77.0.10"])
    assert cluster.writes("create", "services") == 1
    ctrl.shutdown()


REST = ["10.77.0.10:8443", "10.77.0.10:8444", "10.77.0.10:8445"]


async def test_endpoints_lead_to_the_https_ports_of_the_probed_api_servers(cluster: Cluster) -> None:
    """Probed on gRPC, published on HTTPS: https://kubernetes.default.svc reaches the REST API."""
    up = {LAB[0], LAB[2]}
    probed: list[str] = []

    async def probe(endpoint: str) -> bool:
        probed.append(endpoint)
        return endpoint in up

    ctrl = KubernetesServiceController(cluster.api, cluster.factory, api_servers=LAB, https_endpoints=REST,
                                       service_cidr="10.96.0.0/12", probe=probe)
    await cluster.start()
    await ctrl.sync(KEY)
    await cluster.settle()
    assert sorted(probed) == sorted(LAB)
    svc = await cluster.api.get(t.Service, "kubernetes", "default")
    assert [(p.name, p.port, p.target_port.int_val) for p in svc.spec.ports] == [("https", 443, 8443)]
    ep = await cluster.api.get(t.Endpoints, "kubernetes", "default")
    assert view(list(ep.subsets)) == [(8443, ["10.77.0.10"], []), (8444, [], ["10.77.0.10"]),
                                      (8445, ["10.77.0.10"], [])]
    ctrl.shutdown()


def test_one_https_endpoint_per_api_server(cluster: Cluster) -> None:
    with pytest.raises(ValueError, match="one per api-server"):
        KubernetesServiceController(cluster.api, cluster.factory, api_servers=LAB, https_endpoints=REST[:1],
                                    service_cidr="10.96.0.0/12")

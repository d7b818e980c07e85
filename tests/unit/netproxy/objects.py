"""Small builders for Services and Endpoints used across the netproxy tests."""

from __future__ import annotations

from skiffpb.api.v1 import types_pb2 as t


def port(port: int, *, name: str = "", target: int | str | None = None, node_port: int = 0,
         protocol: str = "") -> t.ServicePort:
    p = t.ServicePort(name=name, port=port, node_port=node_port, protocol=protocol)
    if isinstance(target, int):
        p.target_port.int_val = target
    elif isinstance(target, str):
        p.target_port.str_val = target
    return p


def svc(name: str, ip: str, *ports: t.ServicePort, namespace: str = "default", type: str = "",
        affinity: bool = False, affinity_timeout: int | None = None) -> t.Service:
    s = t.Service(metadata=t.ObjectMeta(name=name, namespace=namespace),
                  spec=t.ServiceSpec(cluster_ip=ip, type=type, ports=list(ports) or [port(80)]))
    if affinity:
        s.spec.session_affinity = "ClientIP"
        if affinity_timeout is not None:
            s.spec.session_affinity_config.client_ip.timeout_seconds = affinity_timeout
    return s


def eps(name: str, *subsets: t.EndpointSubset, namespace: str = "default") -> t.Endpoints:
    return t.Endpoints(metadata=t.ObjectMeta(name=name, namespace=namespace), subsets=list(subsets))


def subset(ips: list[str], ports: list[tuple[str, int] | tuple[str, int, str]], *,
           not_ready: list[str] | None = None) -> t.EndpointSubset:
    return t.EndpointSubset(
        addresses=[t.EndpointAddress(ip=ip) for ip in ips],
        not_ready_addresses=[t.EndpointAddress(ip=ip) for ip in (not_ready or [])],
        ports=[t.EndpointPort(name=p[0], port=p[1], protocol=p[2] if len(p) > 2 else "") for p in ports])

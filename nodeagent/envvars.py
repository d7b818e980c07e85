"""Service environment variables of a container (pure), as the kubelet sets them.

What must hold:
- a pod sees the Services of its own namespace (when enableServiceLinks is true, the default)
  and always `default/kubernetes`; only Services with a ClusterIP (not headless, not
  ExternalName, not yet unallocated) give variables;
- for each: `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT` (the first port),
  `<NAME>_SERVICE_PORT_<PORTNAME>` per named port, and the Docker-link variables
  `<NAME>_PORT=tcp://ip:port` and `<NAME>_PORT_<port>_<PROTO>[_PROTO|_PORT|_ADDR]`, where
  `<NAME>` is the Service name upper-cased with `-` as `_`;
- Services are taken in name order, so the same cluster gives the same environment; the
  container's own `env` comes after and wins on a clash.
"""

from __future__ import annotations

from collections.abc import Iterable

from skiffpb.api.v1 import types_pb2 as t

MASTER_SERVICE = ("default", "kubernetes")


def env_name(text: str) -> str:
    return text.replace("-", "_").replace(".", "_").upper()


def has_cluster_ip(svc: t.Service) -> bool:
    return svc.spec.type != "ExternalName" and svc.spec.cluster_ip not in ("", "None")


def visible_services(pod: t.Pod, services: Iterable[t.Service]) -> list[t.Service]:
    ns = pod.metadata.namespace or "default"
    links = not pod.spec.HasField("enable_service_links") or pod.spec.enable_service_links
    chosen: dict[str, t.Service] = {}
    for svc in services:
        if not has_cluster_ip(svc):
            continue
        key = (svc.metadata.namespace, svc.metadata.name)
        if links and svc.metadata.namespace == ns:
            chosen[svc.metadata.name] = svc  # shadows default/kubernetes for a pod outside default
        elif key == MASTER_SERVICE and svc.metadata.name not in chosen:
            chosen[svc.metadata.name] = svc
    return [chosen[name] for name in sorted(chosen)]


def service_env(pod: t.Pod, services: Iterable[t.Service]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for svc in visible_services(pod, services):
        name, ip = env_name(svc.metadata.name), svc.spec.cluster_ip
        out.append((f"{name}_SERVICE_HOST", ip))
        if svc.spec.ports:
            out.append((f"{name}_SERVICE_PORT", str(svc.spec.ports[0].port)))
        for p in svc.spec.ports:
            if p.name:
                out.append((f"{name}_SERVICE_PORT_{env_name(p.name)}", str(p.port)))
        for i, p in enumerate(svc.spec.ports):
            proto = p.protocol or "TCP"
            url = f"{proto.lower()}://{ip}:{p.port}"
            prefix = f"{name}_PORT_{p.port}_{proto.upper()}"
            if i == 0:
                out.append((f"{name}_PORT", url))
            out += [(prefix, url), (f"{prefix}_PROTO", proto.lower()), (f"{prefix}_PORT", str(p.port)),
                    (f"{prefix}_ADDR", ip)]
    return out

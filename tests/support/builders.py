"""Small builders for API objects in tests: `pod("web-1", app="web")`, `deployment("web")`, ..."""

from __future__ import annotations

from skiffpb.api.v1 import types_pb2 as t


def pod(name: str, *, namespace: str = "", image: str = "busybox:1.36", node: str = "", **labels: str) -> t.Pod:
    p = t.Pod(api_version="v1", kind="Pod", metadata=t.ObjectMeta(name=name, namespace=namespace, labels=labels))
    p.spec.containers.add(name="main", image=image)
    if node:
        p.spec.node_name = node
    return p


def deployment(name: str, *, namespace: str = "", replicas: int | None = None, image: str = "nginx:1.25",
               app: str = "") -> t.Deployment:
    app = app or name
    d = t.Deployment(api_version="apps/v1", kind="Deployment", metadata=t.ObjectMeta(name=name, namespace=namespace))
    if replicas is not None:
        d.spec.replicas = replicas
    d.spec.selector.match_labels["app"] = app
    d.spec.template.metadata.labels["app"] = app
    d.spec.template.spec.containers.add(name=name, image=image).ports.add(container_port=80)
    return d


def service(name: str, *, namespace: str = "", port: int = 80, type_: str = "", cluster_ip: str = "",
            node_port: int = 0, app: str = "") -> t.Service:
    s = t.Service(api_version="v1", kind="Service", metadata=t.ObjectMeta(name=name, namespace=namespace))
    s.spec.selector["app"] = app or name
    s.spec.ports.add(port=port, node_port=node_port)
    if type_:
        s.spec.type = type_
    if cluster_ip:
        s.spec.cluster_ip = cluster_ip
    return s


def node(name: str, *, address: str = "127.0.0.1", port: int = 0) -> t.Node:
    n = t.Node(api_version="v1", kind="Node", metadata=t.ObjectMeta(name=name))
    n.status.addresses.add(type="InternalIP", address=address)
    if port:
        n.status.daemon_endpoints.kubelet_endpoint.port = port
    return n


def namespace(name: str) -> t.Namespace:
    return t.Namespace(api_version="v1", kind="Namespace", metadata=t.ObjectMeta(name=name))

"""The downward API: pod fields and container resources as text, for env (fieldRef,
resourceFieldRef) and for downwardAPI volume files. Pure; shared by validation (which paths
exist) and the node agent (their values).

What must hold, as in Kubernetes:
- env may name metadata.name/namespace/uid, metadata.labels['k'] / metadata.annotations['k'],
  spec.nodeName, spec.serviceAccountName, status.hostIP, status.podIP (and podIPs); a volume
  file may name the metadata ones and also whole metadata.labels / metadata.annotations
  (printed `k="v"` one per line, sorted by key);
- resourceFieldRef values are divided by `divisor` (default 1) and rounded UP; a limit that is
  not set falls back to the node's allocatable (here: `node_allocatable`), a request to 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from fractions import Fraction

from skiff import quantity
from skiffpb.api.v1 import types_pb2 as t

ENV_FIELD_PATHS = frozenset({
    "metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName", "spec.serviceAccountName",
    "status.hostIP", "status.hostIPs", "status.podIP", "status.podIPs",
})
VOLUME_FIELD_PATHS = frozenset({"metadata.name", "metadata.namespace", "metadata.uid", "metadata.labels",
                                "metadata.annotations"})
RESOURCES = frozenset({"limits.cpu", "limits.memory", "limits.ephemeral-storage",
                       "requests.cpu", "requests.memory", "requests.ephemeral-storage"})
_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")


class DownwardError(ValueError):
    """A field path or resource that the downward API does not offer."""


def check_field_path(path: str, *, volume: bool) -> str | None:
    """None when `path` may be used (in env, or in a volume file when `volume`), else why not."""
    if _SUBSCRIPT.match(path):
        return None
    allowed = VOLUME_FIELD_PATHS if volume else ENV_FIELD_PATHS
    if path in allowed:
        return None
    return (f'unsupported fieldPath "{path}": supported are ' + ", ".join(f'"{p}"' for p in sorted(allowed))
            + ", metadata.labels['<key>'], metadata.annotations['<key>']")


def _format_map(values: Mapping[str, str]) -> str:
    return "\n".join(f'{k}="{_escape(v)}"' for k, v in sorted(values.items()))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def field_value(pod: t.Pod, path: str) -> str:
    """The text of a pod field; DownwardError for a path that is not offered."""
    m = _SUBSCRIPT.match(path)
    if m:
        values = pod.metadata.labels if m.group(1) == "labels" else pod.metadata.annotations
        return values.get(m.group(2), "")
    meta, spec, status = pod.metadata, pod.spec, pod.status
    simple = {
        "metadata.name": meta.name, "metadata.namespace": meta.namespace, "metadata.uid": meta.uid,
        "spec.nodeName": spec.node_name, "spec.serviceAccountName": spec.service_account_name,
        "status.hostIP": status.host_ip, "status.hostIPs": status.host_ip,
        "status.podIP": status.pod_ip,
        "status.podIPs": ",".join(ip.ip for ip in status.pod_ips) or status.pod_ip,
    }
    if path in simple:
        return simple[path]
    if path == "metadata.labels":
        return _format_map(meta.labels)
    if path == "metadata.annotations":
        return _format_map(meta.annotations)
    raise DownwardError(f'unsupported fieldPath "{path}"')


def resource_value(container: t.Container, resource: str, divisor: str = "",
                   node_allocatable: Mapping[str, str] | None = None) -> str:
    """`limits.memory` of a container divided by `divisor`, rounded up, as an integer text."""
    if resource not in RESOURCES:
        raise DownwardError(f'unsupported resource "{resource}": supported are {", ".join(sorted(RESOURCES))}')
    which, name = resource.split(".", 1)
    values = container.resources.limits if which == "limits" else container.resources.requests
    text = values.get(name, "")
    if not text and which == "limits":
        text = (node_allocatable or {}).get(name, "")
    value = quantity.parse(text) if text else Fraction(0)
    div = quantity.parse(divisor) if divisor else Fraction(1)
    if div <= 0:
        raise DownwardError(f'divisor "{divisor}" must be greater than 0')
    return str(math.ceil(value / div))

"""The ConfigMaps, Secrets and PersistentVolumeClaims a pod refers to: what its node's agent
fetches and watches, and what the Node authorizer lets that node read (Kubernetes' node graph
holds the same edges; a PersistentVolume is reached through the claim bound to it).

What must hold: every name a pod can make its node read is here — env `valueFrom` key refs,
`envFrom` sources, `configMap`/`secret` volumes, the sources of projected volumes, (Secrets)
`imagePullSecrets`, and `persistentVolumeClaim` volumes — in init and app containers alike; a
reference from one pod never names an object of another namespace (the pod's own namespace is
implied). Pure.
"""

from __future__ import annotations

from skiff import storage
from skiffpb.api.v1 import types_pb2 as t

RESOURCES = ("configmaps", "secrets", "persistentvolumeclaims")  # what `referenced` answers for


def config_maps(pod: t.Pod) -> set[str]:
    """Names of the ConfigMaps (in the pod's namespace) the pod refers to."""
    return _referenced(pod, config_maps=True)


def secrets(pod: t.Pod) -> set[str]:
    """Names of the Secrets (in the pod's namespace) the pod refers to."""
    return _referenced(pod, config_maps=False)


def claims(pod: t.Pod) -> set[str]:
    """Names of the PersistentVolumeClaims (in the pod's namespace) the pod's volumes use."""
    return set(storage.pod_claims(pod.spec))


def referenced(pod: t.Pod, resource: str) -> set[str]:
    """`config_maps`, `secrets` or `claims` by resource name (RESOURCES); nothing for others."""
    if resource == "configmaps":
        return config_maps(pod)
    if resource == "secrets":
        return secrets(pod)
    if resource == "persistentvolumeclaims":
        return claims(pod)
    return set()


def _referenced(pod: t.Pod, *, config_maps: bool) -> set[str]:
    out: set[str] = set()
    for c in (*pod.spec.init_containers, *pod.spec.containers):
        for e in c.env:
            ref = e.value_from.config_map_key_ref if config_maps else e.value_from.secret_key_ref
            if ref.name:
                out.add(ref.name)
        for src in c.env_from:
            name = src.config_map_ref.name if config_maps else src.secret_ref.name
            if name:
                out.add(name)
    if not config_maps:
        out.update(ref.name for ref in pod.spec.image_pull_secrets if ref.name)
    for v in pod.spec.volumes:
        name = v.config_map.name if config_maps else v.secret.secret_name
        if name:
            out.add(name)
        for p in v.projected.sources:
            name = p.config_map.name if config_maps else p.secret.name
            if name:
                out.add(name)
    return out

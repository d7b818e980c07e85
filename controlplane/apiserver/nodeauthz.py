"""What a node (`system:node:<name>` in `system:nodes`) may do: the Node authorizer (verbs and
resources, before the request runs) and NodeRestriction admission (the object, old and new,
inside the registry). Pure functions; the registry and the authorizer adapter call them.

What must hold (Kubernetes' Node authorizer and NodeRestriction admission plugin, simplified
where docs/security.md says so):
- The Node authorizer has an opinion only about node users; for them it allows exactly the
  table `NODE_RULES` plus the per-object rules in `node_authorize`, and has no opinion about
  anything else (RBAC then decides; the default policy binds nothing to `system:nodes`).
- A node creates, updates and deletes only its own Node (`nodes/<own name>`) and its own Lease
  (`kube-node-lease/<own name>`); it updates the status of and deletes only pods whose
  `spec.nodeName` is itself (checked against the stored pod, so a pod moved away in the
  request does not count); it creates no pods and changes no pod spec.
- A node changes no taints after its Node exists, and sets or changes no label under
  `node-restriction.kubernetes.io/`, nor under a `kubernetes.io`/`k8s.io` domain unless
  Kubernetes lets the kubelet set it (`KUBELET_LABELS`, `KUBELET_LABEL_PREFIXES`).
- A node requests service-account tokens only bound to a pod whose `spec.nodeName` is itself
  (and which runs as that account: serviceaccount.py checks that for everyone).
- A node reads a ConfigMap, Secret or PersistentVolumeClaim only when a pod bound to it refers
  to that object (skiff/podrefs.py: env, envFrom, volumes, projected sources, imagePullSecrets,
  persistentVolumeClaim volumes), and a PersistentVolume only when such a claim is bound to it
  (`spec.volumeName`) or the volume is pinned to the node (a local volume: the node is its
  local-path provisioner and reclaims it); each only by name: `get`, or `list`/`watch` with
  fieldSelector `metadata.name=<name>` (the front ends put that name in the attributes, as
  Kubernetes' RequestInfo does). Kubernetes' node graph gives the same answer; ours is computed
  from the api-server's caches per request.
- Every refusal names the node and what it may not do, as Kubernetes' messages do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from google.protobuf.message import Message

from controlplane.apiserver.rbac import Attributes
from skiff import defaults, podrefs, storage
from skiff.identity import UserInfo
from skiffpb.api.v1 import types_pb2 as t

READ = frozenset({"get", "list", "watch"})
WRITE = frozenset({"create", "update", "patch", "delete"})
LEASE_GROUP = "coordination.k8s.io"
LEASE_NAMESPACE = defaults.NODE_LEASE_NAMESPACE

# (group, resource incl. subresource) -> verbs any node may use, whatever the object.
# (ConfigMaps and Secrets are not here: `node_authorize` allows the ones its pods refer to.)
NODE_RULES: Mapping[tuple[str, str], frozenset[str]] = {
    ("", "nodes"): READ,
    ("", "pods"): READ | {"delete"},  # delete: NodeRestriction checks the pod is bound here
    ("", "pods/status"): frozenset({"get", "update", "patch"}),  # idem
    ("", "services"): READ,
    ("", "endpoints"): READ,
    # A joined worker's proxy and cluster DNS run with the node's own identity (docs/security.md):
    # they read namespaces and NetworkPolicies (netproxy's policy enforcer) and EndpointSlices.
    ("", "namespaces"): READ,
    ("networking.k8s.io", "networkpolicies"): READ,
    ("discovery.k8s.io", "endpointslices"): READ,
    # delete: a Released local-path volume of this node, once the agent removed its directory
    # (the node is its provisioner); NodeRestriction checks the volume is pinned to this node.
    # (Reading claims and volumes: `node_authorize`, only the ones its pods use.)
    ("", "persistentvolumes"): frozenset({"delete"}),
    ("", "events"): frozenset({"create", "update", "patch"}),
    (LEASE_GROUP, "leases"): frozenset({"get"}),
    # The tokens its pods mount: NodeRestriction (`token_restriction`) checks each is bound to a
    # pod on this node that runs as that service account.
    ("", "serviceaccounts/token"): frozenset({"create"}),
}

# Labels a kubelet may set on its own Node inside the kubernetes.io and k8s.io domains.
KUBELET_LABELS = frozenset({
    "kubernetes.io/hostname", "kubernetes.io/arch", "kubernetes.io/os", "beta.kubernetes.io/arch",
    "beta.kubernetes.io/os", "beta.kubernetes.io/instance-type", "node.kubernetes.io/instance-type",
    "failure-domain.beta.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/region",
    "topology.kubernetes.io/zone", "topology.kubernetes.io/region",
})
KUBELET_LABEL_PREFIXES = ("kubelet.kubernetes.io/", "node.kubernetes.io/")
RESTRICTED_PREFIX = "node-restriction.kubernetes.io/"


# Kinds a node reads only when a pod bound to it refers to the object: resource -> singular.
REFERENCED = {"configmaps": "configmap", "secrets": "secret", "persistentvolumeclaims": "persistentvolumeclaim"}

PodsOn = Callable[[str], Iterable[t.Pod]]  # the pods bound to a node (spec.nodeName), as the api-server has them
# An object as the api-server has it: (resource, namespace, name) -> the object or None.
Lookup = Callable[[str, str, str], Message | None]


def no_pods(node: str) -> Iterable[t.Pod]:
    return ()


def no_objects(resource: str, namespace: str, name: str) -> Message | None:
    return None


def node_authorize(user: UserInfo, attrs: Attributes, pods_on: PodsOn = no_pods,
                   lookup: Lookup = no_objects) -> tuple[bool | None, str]:
    """(True, reason) to allow; (None, reason) for no opinion (not a node, or not a node's right)."""
    node = user.node_name
    if not node:
        return None, ""
    key = (attrs.group, attrs.combined_resource)
    if attrs.verb in NODE_RULES.get(key, frozenset()):
        return True, f'Node: node "{node}" may {attrs.verb} {attrs.combined_resource}'
    if attrs.group == "" and attrs.resource in REFERENCED and not attrs.subresource and attrs.verb in READ:
        return _referenced(node, attrs, pods_on)
    if key == ("", "persistentvolumes") and attrs.verb in READ:
        return _volume(node, attrs, pods_on, lookup)
    # A create names no object (the name is in the body): NodeRestriction checks it is the node's own.
    own = attrs.name == node or (attrs.verb == "create" and not attrs.name)
    if key in (("", "nodes"), ("", "nodes/status")) and attrs.verb in WRITE | {"get"}:
        if own:
            return True, f'Node: node "{node}" may {attrs.verb} its own Node'
        return None, f'Node: node "{node}" may not {attrs.verb} node "{attrs.name}"'
    if key == (LEASE_GROUP, "leases") and attrs.verb in WRITE:
        if attrs.namespace == LEASE_NAMESPACE and own:
            return True, f'Node: node "{node}" may {attrs.verb} its own Lease'
        return None, f'Node: node "{node}" may only {attrs.verb} its own lease {LEASE_NAMESPACE}/{node}'
    return None, f'Node: no rule lets a node {attrs.verb} {attrs.combined_resource}'


def _referenced(node: str, attrs: Attributes, pods_on: PodsOn) -> tuple[bool | None, str]:
    singular = REFERENCED[attrs.resource]
    if not attrs.name:
        return None, (f'Node: node "{node}" may {attrs.verb} only the {attrs.resource} its pods refer to, '
                      f"each by name (fieldSelector metadata.name=<name>)")
    what = f'{singular} "{attrs.namespace}/{attrs.name}"'
    for pod in pods_on(node):
        if pod.metadata.namespace == attrs.namespace and attrs.name in podrefs.referenced(pod, attrs.resource):
            return True, f'Node: pod "{pod.metadata.namespace}/{pod.metadata.name}" on node "{node}" refers to {what}'
    return None, f'Node: node "{node}" may not {attrs.verb} {what}: no pod bound to it refers to it'


def _volume(node: str, attrs: Attributes, pods_on: PodsOn, lookup: Lookup) -> tuple[bool | None, str]:
    if not attrs.name:
        return None, (f'Node: node "{node}" may {attrs.verb} only the persistentvolumes its pods\' claims are '
                      f"bound to, each by name (fieldSelector metadata.name=<name>)")
    what = f'persistentvolume "{attrs.name}"'
    pv = lookup("persistentvolumes", "", attrs.name)
    if isinstance(pv, t.PersistentVolume) and storage.volume_node(pv) == node:
        return True, f'Node: {what} is pinned to node "{node}"'
    for pod in pods_on(node):
        for claim in podrefs.claims(pod):
            pvc = lookup("persistentvolumeclaims", pod.metadata.namespace, claim)
            if isinstance(pvc, t.PersistentVolumeClaim) and pvc.spec.volume_name == attrs.name:
                return True, (f'Node: pod "{pod.metadata.namespace}/{pod.metadata.name}" on node "{node}" uses '
                              f'claim "{pod.metadata.namespace}/{claim}", bound to {what}')
    return None, f'Node: node "{node}" may not {attrs.verb} {what}: no claim of a pod bound to it is bound to it'


# ---------------------------------------------------------------- NodeRestriction admission

def _label_forbidden(key: str) -> bool:
    if key.startswith(RESTRICTED_PREFIX):
        return True
    domain = key.split("/", 1)[0] if "/" in key else ""
    in_k8s = any(domain == d or domain.endswith("." + d) for d in ("kubernetes.io", "k8s.io"))
    if not in_k8s:
        return False
    return key not in KUBELET_LABELS and not key.startswith(KUBELET_LABEL_PREFIXES)


def forbidden_labels(new: Mapping[str, str], old: Mapping[str, str]) -> list[str]:
    """The labels a node may not add or change (sorted); removing is not checked, as in Kubernetes."""
    return sorted(k for k, v in new.items() if old.get(k) != v and _label_forbidden(k))


def _taints(node: t.Node) -> list[bytes]:
    return sorted(x.SerializeToString(deterministic=True) for x in node.spec.taints)


def token_restriction(user: UserInfo, pod: t.Pod | None) -> str | None:
    """Why `user` may not have a token bound to `pod` (None: unbound), or None when it may."""
    node = user.node_name
    if not node:
        return None
    if pod is None:
        return f'node "{node}" requested a token not bound to a pod'
    if pod.spec.node_name != node:
        return f'node "{node}" requested a token bound to a pod scheduled on a different node'
    return None


def node_restriction(user: UserInfo, operation: str, obj: Message, old: Message | None, *,
                     subresource: str = "") -> str | None:
    """Why `user` may not make this write (operation: create, update or delete), or None.

    `obj` is the object as it would be stored (for delete: the stored object); `old` the stored
    object before the write (None for create).
    """
    node = user.node_name
    if not node:
        return None
    if isinstance(obj, t.Pod):
        if operation == "create":
            return f'node "{node}" can only create mirror pods, and Skiff has none'
        bound = old.spec.node_name if isinstance(old, t.Pod) else ""
        if operation == "delete" and bound != node:
            return f'node "{node}" can only delete pods with spec.nodeName set to itself'
        if operation == "update" and subresource != "status":
            return f'node "{node}" may not update the spec or metadata of pods'
        if operation == "update" and (bound != node or obj.spec.node_name != node):
            return f'node "{node}" can only update pod status for pods with spec.nodeName set to itself'
        return None
    if isinstance(obj, t.Node):
        if obj.metadata.name != node:
            return f'node "{node}" is not allowed to modify node "{obj.metadata.name}"'
        old_labels = dict(old.metadata.labels) if isinstance(old, t.Node) else {}
        bad = forbidden_labels(dict(obj.metadata.labels), old_labels) if operation != "delete" else []
        if bad:
            return f'node "{node}" is not allowed to modify labels: {", ".join(bad)}'
        if operation == "update" and isinstance(old, t.Node) and _taints(obj) != _taints(old):
            return f'node "{node}" is not allowed to modify taints'
        return None
    if isinstance(obj, t.PersistentVolume):
        if operation != "delete" or storage.volume_node(obj) != node:
            return f'node "{node}" can only delete persistentvolumes pinned to itself'
        return None
    if isinstance(obj, t.Lease):
        if obj.metadata.namespace != LEASE_NAMESPACE or obj.metadata.name != node:
            return (f'node "{node}" is not allowed to modify lease '
                    f'"{obj.metadata.namespace}/{obj.metadata.name}"')
    return None

"""What a node may do: the Node authorizer's table, NodeRestriction's refusals (pure), and both
enforced on the real registry through InProcessApi acting as the node (Node,RBAC on)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from google.protobuf.message import Message

from controlplane.apiserver.inprocess import InProcessApi
from controlplane.apiserver.nodeauthz import forbidden_labels, node_authorize, node_restriction
from controlplane.apiserver.rbac import Attributes
from skiff import defaults, errors, identity, storage
from skiff.identity import UserInfo
from skiff.retry import eventually
from skiffpb.api.v1 import types_pb2 as t
from tests.unit.controlplane.harness import deployment, pod

N1 = identity.node_user("n1")
LEASES = "coordination.k8s.io"


@pytest.mark.parametrize(("user", "attrs", "verdict"), [
    (N1, Attributes("get", "nodes", name="n2"), True),
    (N1, Attributes("list", "pods"), True),
    (N1, Attributes("update", "pods", "status", namespace="d", name="p"), True),  # bound: NodeRestriction's check
    (N1, Attributes("update", "pods", namespace="d", name="p"), None),
    (N1, Attributes("create", "pods", namespace="d"), None),
    (N1, Attributes("create", "nodes"), True),
    (N1, Attributes("update", "nodes", name="n1"), True),
    (N1, Attributes("update", "nodes", "status", name="n1"), True),
    (N1, Attributes("update", "nodes", name="n2"), None),
    (N1, Attributes("delete", "nodes", name="n2"), None),
    (N1, Attributes("update", "leases", group=LEASES, namespace=defaults.NODE_LEASE_NAMESPACE, name="n1"), True),
    (N1, Attributes("update", "leases", group=LEASES, namespace=defaults.NODE_LEASE_NAMESPACE, name="n2"), None),
    (N1, Attributes("update", "leases", group=LEASES, namespace="kube-system", name="n1"), None),
    (N1, Attributes("update", "deployments", group="apps", namespace="d", name="web"), None),
    (N1, Attributes("get", "secrets", namespace="d", name="s"), None),  # no pod refers to it: see below
    (N1, Attributes("create", "events", namespace="d"), True),
    (N1, Attributes("delete", "services", namespace="d", name="s"), None),
    (UserInfo("system:node:n1"), Attributes("get", "nodes", name="n1"), None),  # not in system:nodes
    (UserInfo("alice"), Attributes("get", "nodes", name="n1"), None),
], ids=["read-nodes", "list-pods", "pod-status", "pod-spec", "create-pod", "create-node", "own-node",
        "own-node-status", "other-node", "delete-other-node", "own-lease", "other-lease", "lease-elsewhere",
        "deployment", "secret", "events", "delete-service", "name-without-group", "not-a-node"])
def test_node_authorize(user: UserInfo, attrs: Attributes, verdict: bool | None) -> None:
    assert node_authorize(user, attrs)[0] is verdict


def _referring(name: str, node: str, ns: str = "d") -> t.Pod:
    p = pod(name, node=node)
    p.metadata.namespace = ns
    p.spec.volumes.add(name="v", secret=t.SecretVolumeSource(secret_name="s"))
    p.spec.containers[0].env.add(name="E", value_from=t.EnvVarSource(
        config_map_key_ref=t.ConfigMapKeySelector(name="c", key="k")))
    p.spec.volumes.add(name="data", persistent_volume_claim=t.PersistentVolumeClaimVolumeSource(claim_name="data"))
    return p


PODS_ON = {"n1": [_referring("mine", "n1")], "n2": [_referring("theirs", "n2", ns="other")]}


def _claim(ns: str, name: str, volume_name: str) -> t.PersistentVolumeClaim:
    return t.PersistentVolumeClaim(metadata=t.ObjectMeta(name=name, namespace=ns),
                                   spec=t.PersistentVolumeClaimSpec(volume_name=volume_name))


# d/data (mine, on n1) is bound to pv-mine; other/data (n2's pod) to pv-theirs; d/spare to pv-spare (no pod uses
# it); pv-local-n1 is pinned to n1 (its local-path volume, to reclaim) and used by nobody.
OBJECTS: dict[tuple[str, str, str], Message] = {
    ("persistentvolumeclaims", "d", "data"): _claim("d", "data", "pv-mine"),
    ("persistentvolumeclaims", "other", "data"): _claim("other", "data", "pv-theirs"),
    ("persistentvolumeclaims", "d", "spare"): _claim("d", "spare", "pv-spare"),
    ("persistentvolumes", "", "pv-local-n1"): t.PersistentVolume(
        metadata=t.ObjectMeta(name="pv-local-n1"), spec=t.PersistentVolumeSpec(
            node_affinity=storage.node_affinity_for("n1"))),
    ("persistentvolumes", "", "pv-local-n2"): t.PersistentVolume(
        metadata=t.ObjectMeta(name="pv-local-n2"), spec=t.PersistentVolumeSpec(
            node_affinity=storage.node_affinity_for("n2"))),
}


@pytest.mark.parametrize(("attrs", "verdict", "reason"), [
    (Attributes("get", "secrets", namespace="d", name="s"), True, 'pod "d/mine" on node "n1" refers to secret "d/s"'),
    (Attributes("watch", "secrets", namespace="d", name="s"), True, 'refers to secret "d/s"'),
    (Attributes("get", "configmaps", namespace="d", name="c"), True, 'refers to configmap "d/c"'),
    (Attributes("get", "secrets", namespace="d", name="t"), None,
     'node "n1" may not get secret "d/t": no pod bound to it refers to it'),
    (Attributes("get", "secrets", namespace="other", name="s"), None,  # n2's pod refers to it, not n1's
     'node "n1" may not get secret "other/s": no pod bound to it refers to it'),
    (Attributes("get", "configmaps", namespace="d", name="s"), None, 'may not get configmap "d/s"'),
    (Attributes("list", "secrets", namespace="d"), None, 'node "n1" may list only the secrets its pods refer to'),
    (Attributes("watch", "secrets"), None, "each by name (fieldSelector metadata.name=<name>)"),
    (Attributes("update", "secrets", namespace="d", name="s"), None, "no rule lets a node update secrets"),
    (Attributes("get", "persistentvolumeclaims", namespace="d", name="data"), True,
     'pod "d/mine" on node "n1" refers to persistentvolumeclaim "d/data"'),
    (Attributes("watch", "persistentvolumeclaims", namespace="d", name="data"), True,
     'refers to persistentvolumeclaim'),
    (Attributes("get", "persistentvolumeclaims", namespace="d", name="spare"), None,
     'node "n1" may not get persistentvolumeclaim "d/spare": no pod bound to it refers to it'),
    (Attributes("get", "persistentvolumeclaims", namespace="other", name="data"), None,
     'may not get persistentvolumeclaim "other/data"'),
    (Attributes("list", "persistentvolumeclaims"), None, "may list only the persistentvolumeclaims its pods refer to"),
    (Attributes("get", "persistentvolumes", name="pv-mine"), True,
     'pod "d/mine" on node "n1" uses claim "d/data", bound to persistentvolume "pv-mine"'),
    (Attributes("watch", "persistentvolumes", name="pv-mine"), True, 'bound to persistentvolume "pv-mine"'),
    (Attributes("get", "persistentvolumes", name="pv-theirs"), None,
     'node "n1" may not get persistentvolume "pv-theirs": no claim of a pod bound to it is bound to it'),
    (Attributes("get", "persistentvolumes", name="pv-spare"), None, 'may not get persistentvolume "pv-spare"'),
    (Attributes("watch", "persistentvolumes", name="pv-local-n1"), True,
     'persistentvolume "pv-local-n1" is pinned to node "n1"'),
    (Attributes("get", "persistentvolumes", name="pv-local-n2"), None, 'may not get persistentvolume "pv-local-n2"'),
    (Attributes("list", "persistentvolumes"), None, "may list only the persistentvolumes its pods' claims are bound"),
    (Attributes("delete", "persistentvolumes", name="pv-local-n1"), True, "may delete persistentvolumes"),
], ids=["get-referenced", "watch-referenced", "configmap-referenced", "secret-unreferenced", "other-nodes-pod",
        "wrong-kind", "list-all", "watch-all", "no-writes", "claim-used", "claim-watch-used", "claim-unused",
        "claim-of-other-nodes-pod", "claims-list-all", "volume-of-used-claim", "volume-watch", "volume-of-other-node",
        "volume-of-unused-claim", "volume-pinned-here", "volume-pinned-elsewhere", "volumes-list-all",
        "volume-delete-left-to-admission"])
def test_node_reads_what_its_pods_refer_to(attrs: Attributes, verdict: bool | None, reason: str) -> None:
    got = node_authorize(N1, attrs, lambda node: PODS_ON.get(node, []),
                         lambda resource, ns, name: OBJECTS.get((resource, ns, name)))
    assert got[0] is verdict and reason in got[1], got


def node(name: str, *, labels: dict[str, str] | None = None, taints: tuple[str, ...] = ()) -> t.Node:
    n = t.Node(api_version="v1", kind="Node", metadata=t.ObjectMeta(name=name, labels=labels or {}))
    for key in taints:
        n.spec.taints.add(key=key, effect="NoSchedule")
    return n


def lease(name: str, ns: str = defaults.NODE_LEASE_NAMESPACE) -> t.Lease:
    return t.Lease(metadata=t.ObjectMeta(name=name, namespace=ns))


def volume(name: str, node: str) -> t.PersistentVolume:
    return t.PersistentVolume(metadata=t.ObjectMeta(name=name), spec=t.PersistentVolumeSpec(
        node_affinity=storage.node_affinity_for(node)))


@pytest.mark.parametrize(("op", "obj", "old", "sub", "refusal"), [
    ("update", pod("p", node="n1"), pod("p", node="n1"), "status", None),
    ("update", pod("p", node="n2"), pod("p", node="n2"), "status", "can only update pod status"),
    ("update", pod("p", node="n1"), pod("p", node="n2"), "status", "can only update pod status"),  # moved in request
    ("update", pod("p", node="n1"), pod("p", node="n1"), "", "may not update the spec or metadata of pods"),
    ("delete", pod("p", node="n1"), pod("p", node="n1"), "", None),
    ("delete", pod("p", node="n2"), pod("p", node="n2"), "", "can only delete pods with spec.nodeName"),
    ("create", pod("p", node="n1"), None, "", "can only create mirror pods"),
    ("create", node("n1", labels={"kubernetes.io/hostname": "n1", "team": "a"}), None, "", None),
    ("create", node("n2"), None, "", 'is not allowed to modify node "n2"'),
    ("update", node("n2"), node("n2"), "status", 'is not allowed to modify node "n2"'),
    ("create", node("n1", labels={"node-restriction.kubernetes.io/pci": "yes"}), None, "",
     "not allowed to modify labels: node-restriction.kubernetes.io/pci"),
    ("update", node("n1", labels={"node-role.kubernetes.io/control-plane": ""}), node("n1"), "",
     "not allowed to modify labels: node-role.kubernetes.io/control-plane"),
    ("update", node("n1", labels={"node.kubernetes.io/instance-type": "big"}), node("n1"), "", None),
    ("update", node("n1"), node("n1", taints=("dedicated",)), "", "not allowed to modify taints"),
    ("create", node("n1", taints=("dedicated",)), None, "", None),  # registering with taints is allowed
    ("update", lease("n1"), lease("n1"), "", None),
    ("update", lease("n2"), lease("n2"), "", 'not allowed to modify lease "kube-node-lease/n2"'),
    ("create", lease("n1", "default"), None, "", 'not allowed to modify lease "default/n1"'),
    ("update", deployment("web"), deployment("web"), "", None),  # the authorizer refuses, not admission
    ("delete", volume("pvc-1", "n1"), volume("pvc-1", "n1"), "", None),  # its reclaimed local-path volume
    ("delete", volume("pvc-2", "n2"), volume("pvc-2", "n2"), "", "can only delete persistentvolumes pinned"),
    ("update", volume("pvc-1", "n1"), volume("pvc-1", "n1"), "", "can only delete persistentvolumes pinned"),
], ids=["own-pod-status", "other-pod-status", "pod-moved-in-request", "pod-spec", "delete-own-pod",
        "delete-other-pod", "create-pod", "register", "register-other", "other-node-status", "restricted-label",
        "role-label", "kubelet-label", "untaint", "register-tainted", "own-lease", "other-lease",
        "lease-elsewhere", "not-restricted", "delete-own-volume", "delete-other-volume", "update-volume"])
def test_node_restriction(op: str, obj: object, old: object, sub: str, refusal: str | None) -> None:
    problem = node_restriction(N1, op, obj, old, subresource=sub)  # type: ignore[arg-type]
    if refusal is None:
        assert problem is None
    else:
        assert problem is not None and refusal in problem and '"n1"' in problem
    assert node_restriction(identity.INSECURE_ADMIN, op, obj, old, subresource=sub) is None  # type: ignore[arg-type]


def test_forbidden_labels_ignores_unchanged_and_removed() -> None:
    old = {"node-role.kubernetes.io/worker": ""}
    assert forbidden_labels({"node-role.kubernetes.io/worker": ""}, old) == []
    assert forbidden_labels({}, old) == []
    assert forbidden_labels({"example.com/x": "1", "k8s.io/y": "2"}, {}) == ["k8s.io/y"]


# ---------------------------------------------------------------- enforced on the registry


@pytest.fixture
async def cluster() -> AsyncIterator[tuple[InProcessApi, InProcessApi]]:
    admin = InProcessApi()
    async with admin:
        for name in ("n1", "n2"):
            await admin.create(node(name))
        await admin.create(pod("mine", node="n1"))
        await admin.create(pod("theirs", node="n2"))
        await admin.create(deployment("web"))
        yield admin, admin.as_user(N1)


async def test_node_updates_status_of_its_own_pod_only(cluster: tuple[InProcessApi, InProcessApi]) -> None:
    admin, n1 = cluster
    mine = await n1.get(t.Pod, "mine", "default")
    mine.status.phase = "Running"
    assert (await n1.update_status(mine)).status.phase == "Running"
    theirs = await n1.get(t.Pod, "theirs", "default")
    theirs.status.phase = "Failed"
    with pytest.raises(errors.ForbiddenError, match='node "n1" can only update pod status'):
        await n1.update_status(theirs)
    with pytest.raises(errors.ForbiddenError, match='node "n1" can only delete pods'):
        await n1.delete(t.Pod, "theirs", "default")
    assert (await admin.get(t.Pod, "theirs", "default")).status.phase != "Failed"


async def test_node_cannot_change_a_deployment(cluster: tuple[InProcessApi, InProcessApi]) -> None:
    _, n1 = cluster
    with pytest.raises(errors.ForbiddenError) as err:
        await n1.get(t.Deployment, "web", "default")
    assert err.value.message == ('deployments.apps "web" is forbidden: User "system:node:n1" cannot get resource '
                                 '"deployments" in API group "apps" in the namespace "default": Node: no rule lets '
                                 'a node get deployments')
    with pytest.raises(errors.ForbiddenError, match='User "system:node:n1" cannot delete resource "deployments"'):
        await n1.delete(t.Deployment, "web", "default")


async def test_node_cannot_change_another_node_or_its_own_labels(cluster: tuple[InProcessApi, InProcessApi]) -> None:
    admin, n1 = cluster
    other = await n1.get(t.Node, "n2")
    other.metadata.labels["hacked"] = "yes"
    with pytest.raises(errors.ForbiddenError, match='cannot update resource "nodes"'):
        await n1.update(other)
    with pytest.raises(errors.ForbiddenError, match='cannot delete resource "nodes"'):
        await n1.delete(t.Node, "n2")
    with pytest.raises(errors.ForbiddenError, match='nodes "n3" is forbidden: node "n1" is not allowed to modify '
                                                    'node "n3"'):
        await n1.create(node("n3"))
    own = await n1.get(t.Node, "n1")
    own.metadata.labels["node-role.kubernetes.io/control-plane"] = ""
    with pytest.raises(errors.ForbiddenError, match="not allowed to modify labels"):
        await n1.update(own)
    own = await n1.get(t.Node, "n1")
    own.spec.taints.add(key="mine", effect="NoSchedule")
    with pytest.raises(errors.ForbiddenError, match="not allowed to modify taints"):
        await n1.update(own)
    own = await n1.get(t.Node, "n1")
    own.metadata.labels["topology.kubernetes.io/zone"] = "a"
    assert (await n1.update(own)).metadata.labels["topology.kubernetes.io/zone"] == "a"
    assert "hacked" not in (await admin.get(t.Node, "n2")).metadata.labels


async def test_node_lease_is_its_own(cluster: tuple[InProcessApi, InProcessApi]) -> None:
    _, n1 = cluster
    await n1.create(lease("n1"))
    with pytest.raises(errors.ForbiddenError, match='not allowed to modify lease "kube-node-lease/n2"'):
        await n1.create(lease("n2"))


async def test_node_reads_only_the_secrets_and_configmaps_its_pods_refer_to(
        cluster: tuple[InProcessApi, InProcessApi]) -> None:
    admin, n1 = cluster
    for ns in ("default", "other"):
        if ns != "default":
            await admin.create(t.Namespace(metadata=t.ObjectMeta(name=ns)))
        await admin.create(t.Secret(metadata=t.ObjectMeta(name="s", namespace=ns), string_data={"k": "v"}))
    await admin.create(t.Secret(metadata=t.ObjectMeta(name="unused", namespace="default")))
    await admin.create(t.ConfigMap(metadata=t.ObjectMeta(name="c", namespace="default"), data={"k": "v"}))
    for name, node_name, ns in (("uses", "n1", "default"), ("elsewhere", "n2", "other")):
        p = _referring(name, node_name, ns)
        p.metadata.namespace = ns
        await admin.create(p)
    assert (await n1.get(t.Secret, "s", "default")).metadata.name == "s"
    assert (await n1.get(t.ConfigMap, "c", "default")).data == {"k": "v"}
    one = await n1.list(t.Secret, namespace="default", field_selector="metadata.name=s")
    assert [x.metadata.name for x in one.items] == ["s"]
    with pytest.raises(errors.ForbiddenError) as err:
        await n1.get(t.Secret, "unused", "default")
    assert err.value.message == ('secrets "unused" is forbidden: User "system:node:n1" cannot get resource "secrets" '
                                 'in API group "" in the namespace "default": Node: node "n1" may not get secret '
                                 '"default/unused": no pod bound to it refers to it')
    with pytest.raises(errors.ForbiddenError, match='node "n1" may not get secret "other/s"'):
        await n1.get(t.Secret, "s", "other")  # the pod that refers to it runs on n2
    with pytest.raises(errors.ForbiddenError, match='node "n1" may list only the secrets its pods refer to'):
        await n1.list(t.Secret, namespace="default")
    with pytest.raises(errors.ForbiddenError, match='may not list secret "default/unused"'):
        await n1.list(t.Secret, namespace="default", field_selector="metadata.name=unused")
    await admin.delete(t.Pod, "uses", "default", grace_period_seconds=0)

    async def refused() -> str:  # its pod is gone (from the api-server's cache): so is the node's right to it
        try:
            await n1.get(t.Secret, "s", "default")
        except errors.ForbiddenError as exc:
            return exc.message
        return ""

    assert 'node "n1" may not get secret "default/s"' in await eventually(refused, timeout=5, interval=0.05,
                                                                           what="the refusal once the pod is gone")

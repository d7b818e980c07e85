"""Discovery documents: /version, /api, /api/v1, /apis, /apis/<group>/<version>, from skiff.kinds.

What must hold: every kind in skiff.kinds is listed exactly once, in its group version, with
its short names, the verbs the HTTP layer serves for it and its subresources (status for kinds
with a status, scale for Deployment, ReplicaSet and StatefulSet, pods/log, pods/exec,
pods/binding, pods/eviction); metrics.k8s.io/v1beta1 (nodes, pods: get, list) is listed beside
them; nothing is listed that the HTTP layer does not serve. Only the legacy (unaggregated)
discovery format is served: kubectl asks for the aggregated one first and falls back when the
answer is plain `application/json`.
"""

from __future__ import annotations

from typing import Any

from controlplane.apiserver import resourcemetrics
from skiff import __version__, kinds

# What Kubernetes version the API corresponds to (kubectl warns beyond one minor of skew).
KUBE_MAJOR, KUBE_MINOR = "1", "35"
VERBS = ("create", "delete", "get", "list", "patch", "update", "watch")
SUBRESOURCE_VERBS = ("get", "patch", "update")
# kubectl's `get all`: the workload kinds Kubernetes puts in the "all" category.
ALL_CATEGORY = frozenset({"pods", "services", "deployments", "replicasets", "daemonsets", "statefulsets", "jobs",
                          "cronjobs"})
SCALABLE = frozenset({"deployments", "replicasets", "statefulsets"})
# Served beside the kinds, read-only, as metrics-server's aggregated API (resourcemetrics.py).
METRICS_GV = resourcemetrics.GROUP_VERSION
# Served resources that are not stored kinds: only created, and answered at once.
REVIEWS: dict[str, list[dict[str, Any]]] = {
    "authorization.k8s.io/v1": [{"name": "selfsubjectaccessreviews", "singularName": "selfsubjectaccessreview",
                                 "namespaced": False, "kind": "SelfSubjectAccessReview", "verbs": ["create"]},
                                {"name": "selfsubjectrulesreviews", "singularName": "selfsubjectrulesreview",
                                 "namespaced": False, "kind": "SelfSubjectRulesReview", "verbs": ["create"]}],
}


def has_status(kind: kinds.Kind) -> bool:
    return "status" in kind.message.DESCRIPTOR.fields_by_name


def group_versions() -> list[str]:
    """Every served group version, core ("v1") first, in a stable order."""
    out: list[str] = []
    for gv in (*(k.api_version for k in kinds.KINDS), *REVIEWS):
        if gv not in out:
            out.append(gv)
    return sorted(out, key=lambda gv: (gv != "v1", gv))


def version_info() -> dict[str, Any]:
    return {"major": KUBE_MAJOR, "minor": KUBE_MINOR, "gitVersion": f"v{KUBE_MAJOR}.{KUBE_MINOR}.0-skiff.{__version__}",
            "gitCommit": "", "gitTreeState": "clean", "buildDate": "1970-01-01T00:00:00Z", "goVersion": "python",
            "compiler": "cpython", "platform": "linux/amd64"}


def api_versions(server_address: str) -> dict[str, Any]:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]}


def _group_entry(gv: str) -> dict[str, Any]:
    group, version = gv.split("/")
    ref = {"groupVersion": gv, "version": version}
    return {"name": group, "versions": [ref], "preferredVersion": ref}


def api_group_list() -> dict[str, Any]:
    return {"kind": "APIGroupList", "apiVersion": "v1",
            "groups": [_group_entry(gv) for gv in (*group_versions(), METRICS_GV) if gv != "v1"]}


def api_group(group: str) -> dict[str, Any] | None:
    for gv in (*group_versions(), METRICS_GV):
        if gv.startswith(group + "/"):
            return {"kind": "APIGroup", "apiVersion": "v1", **_group_entry(gv)}
    return None


def resources(gv: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for k in kinds.KINDS:
        if k.api_version != gv:
            continue
        entry: dict[str, Any] = {"name": k.resource, "singularName": k.singular or k.kind.lower(),
                                 "namespaced": k.namespaced, "kind": k.kind, "verbs": list(VERBS)}
        if k.short_names:
            entry["shortNames"] = list(k.short_names)
        if k.resource in ALL_CATEGORY:
            entry["categories"] = ["all"]
        out.append(entry)
        if has_status(k):
            out.append({"name": f"{k.resource}/status", "singularName": "", "namespaced": k.namespaced,
                        "kind": k.kind, "verbs": list(SUBRESOURCE_VERBS)})
        if k.resource in SCALABLE:
            out.append({"name": f"{k.resource}/scale", "singularName": "", "namespaced": k.namespaced,
                        "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": list(SUBRESOURCE_VERBS)})
        if k.resource == "pods":
            out.append({"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]})
            out.append({"name": "pods/exec", "singularName": "", "namespaced": True, "kind": "PodExecOptions",
                        "verbs": ["create", "get"]})
            out.append({"name": "pods/attach", "singularName": "", "namespaced": True, "kind": "PodAttachOptions",
                        "verbs": ["create", "get"]})
            out.append({"name": "pods/portforward", "singularName": "", "namespaced": True,
                        "kind": "PodPortForwardOptions", "verbs": ["create", "get"]})
            out.append({"name": "pods/binding", "singularName": "", "namespaced": True, "kind": "Binding",
                        "verbs": ["create"]})
            # group and version tell kubectl drain that evictions are served, and in which version
            out.append({"name": "pods/eviction", "singularName": "", "namespaced": True, "group": "policy",
                        "version": "v1", "kind": "Eviction", "verbs": ["create"]})
    out.extend(REVIEWS.get(gv, ()))
    return out


def resource_list(gv: str) -> dict[str, Any] | None:
    """The APIResourceList of `gv`, None for a group version not served."""
    if gv == METRICS_GV:
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                "resources": resourcemetrics.resources()}
    if gv not in group_versions():
        return None
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources(gv)}

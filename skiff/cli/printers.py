"""How `skiff get` prints objects: kubectl-like tables, and -o yaml|json|name.

Pure functions of (objects, now): `rows(kind, objs, now=..., wide=...)` gives the header
and one row per object; `table()` aligns them the way kubectl's tabwriter does (columns
left-aligned, three spaces apart). Ages follow kubectl's HumanDuration ("45s", "3m2s",
"5h", "2d3h").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import yaml
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from skiff import conditions, kinds, labels, storage
from skiff.convert import format_timestamp, to_data
from skiffpb.api.v1 import types_pb2 as t

NONE = "<none>"
Row = list[str]


def human_duration(seconds: float) -> str:
    """kubectl's HumanDuration."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def age(ts: Timestamp, now: float) -> str:
    if not ts.seconds and not ts.nanos:
        return "<unknown>"
    return human_duration(now - (ts.seconds + ts.nanos / 1e9))


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    all_rows = [list(header), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(header))]
    lines = []
    for r in all_rows:
        cells = [cell.ljust(widths[i]) if i < len(r) - 1 else cell for i, cell in enumerate(r)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines)


def selector_text(sel: t.LabelSelector) -> str:
    try:
        text = labels.to_string(labels.from_label_selector(sel))
    except labels.SelectorError:
        return "<invalid>"
    return text or NONE


def map_text(values: Any) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(values.items())) or NONE


def containers_and_images(spec: t.PodSpec) -> Row:
    return [",".join(c.name for c in spec.containers), ",".join(c.image for c in spec.containers)]


# ---------------------------------------------------------------------- per kind

def pod_status(pod: t.Pod) -> tuple[str, int, int, int]:
    """(STATUS, ready containers, total, restarts) as kubectl computes them (Init:1/2 while initializing)."""
    reason = pod.status.reason or pod.status.phase or "Pending"
    ready = restarts = 0
    sidecars = {c.name for c in pod.spec.init_containers
                if c.HasField("restart_policy") and c.restart_policy == "Always"}
    total = len(pod.spec.containers) + len(sidecars)
    initializing = False
    for i, cs in enumerate(pod.status.init_container_statuses):
        restarts += cs.restart_count
        state = cs.state
        if cs.name in sidecars and cs.started:
            if cs.ready:
                ready += 1
            continue
        if state.HasField("terminated") and state.terminated.exit_code == 0:
            continue
        if state.HasField("terminated"):
            term = state.terminated
            if term.reason:
                reason = f"Init:{term.reason}"
            else:
                reason = f"Init:Signal:{term.signal}" if term.signal else f"Init:ExitCode:{term.exit_code}"
        elif state.HasField("waiting") and state.waiting.reason and state.waiting.reason != "PodInitializing":
            reason = f"Init:{state.waiting.reason}"
        else:
            reason = f"Init:{i}/{len(pod.spec.init_containers)}"
        initializing = True
        break
    has_running = False
    if not initializing:
        for cs in reversed(pod.status.container_statuses):
            restarts += cs.restart_count
            state = cs.state
            if state.HasField("waiting") and state.waiting.reason:
                reason = state.waiting.reason
            elif state.HasField("terminated") and state.terminated.reason:
                reason = state.terminated.reason
            elif state.HasField("terminated"):
                term = state.terminated
                reason = f"Signal:{term.signal}" if term.signal else f"ExitCode:{term.exit_code}"
            elif cs.ready and state.HasField("running"):
                has_running = True
                ready += 1
    if reason == "Completed" and has_running:
        reason = "Running" if conditions.is_pod_ready(pod) else "NotReady"
    if pod.metadata.HasField("deletion_timestamp"):
        reason = "Unknown" if pod.status.reason == "NodeLost" else "Terminating"
    return reason, ready, total, restarts


def _pods(objs: Sequence[t.Pod], now: float, wide: bool) -> tuple[Row, list[Row]]:
    header = ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] + (["IP", "NODE"] if wide else [])
    out = []
    for p in objs:
        status, ready, total, restarts = pod_status(p)
        row = [p.metadata.name, f"{ready}/{total}", status, str(restarts), age(p.metadata.creation_timestamp, now)]
        if wide:
            row += [p.status.pod_ip or NONE, p.spec.node_name or NONE]
        out.append(row)
    return header, out


def _deployments(objs: Sequence[t.Deployment], now: float, wide: bool) -> tuple[Row, list[Row]]:
    header = ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    if wide:
        header += ["CONTAINERS", "IMAGES", "SELECTOR"]
    out = []
    for d in objs:
        row = [d.metadata.name, f"{d.status.ready_replicas}/{d.spec.replicas}", str(d.status.updated_replicas),
               str(d.status.available_replicas), age(d.metadata.creation_timestamp, now)]
        if wide:
            row += [*containers_and_images(d.spec.template.spec), selector_text(d.spec.selector)]
        out.append(row)
    return header, out


def _replicasets(objs: Sequence[t.ReplicaSet], now: float, wide: bool) -> tuple[Row, list[Row]]:
    header = ["NAME", "DESIRED", "CURRENT", "READY", "AGE"] + (["CONTAINERS", "IMAGES", "SELECTOR"] if wide else [])
    out = []
    for rs in objs:
        row = [rs.metadata.name, str(rs.spec.replicas), str(rs.status.replicas), str(rs.status.ready_replicas),
               age(rs.metadata.creation_timestamp, now)]
        if wide:
            row += [*containers_and_images(rs.spec.template.spec), selector_text(rs.spec.selector)]
        out.append(row)
    return header, out


def service_ports(svc: t.Service) -> str:
    parts = []
    for p in svc.spec.ports:
        proto = p.protocol or "TCP"
        parts.append(f"{p.port}:{p.node_port}/{proto}" if p.node_port else f"{p.port}/{proto}")
    return ",".join(parts) or NONE


def _services(objs: Sequence[t.Service], now: float, wide: bool) -> tuple[Row, list[Row]]:
    header = ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"] + (["SELECTOR"] if wide else [])
    out = []
    for s in objs:
        external = ",".join(i.ip or i.hostname for i in s.status.load_balancer.ingress) or NONE
        if s.spec.type == "ExternalName":
            external = s.spec.external_name or NONE  # as kubectl shows it
        row = [s.metadata.name, s.spec.type or "ClusterIP", s.spec.cluster_ip or NONE, external, service_ports(s),
               age(s.metadata.creation_timestamp, now)]
        if wide:
            row.append(map_text(s.spec.selector))
        out.append(row)
    return header, out


def endpoints_text(ep: t.Endpoints, *, limit: int = 3) -> str:
    items: list[str] = []
    for subset in ep.subsets:
        for addr in subset.addresses:
            if subset.ports:
                items.extend(f"{addr.ip}:{port.port}" for port in subset.ports)
            else:
                items.append(addr.ip)
    if not items:
        return NONE
    if len(items) > limit:
        return ",".join(items[:limit]) + f" + {len(items) - limit} more..."
    return ",".join(items)


def _endpoints(objs: Sequence[t.Endpoints], now: float, wide: bool) -> tuple[Row, list[Row]]:
    return ["NAME", "ENDPOINTS", "AGE"], [
        [e.metadata.name, endpoints_text(e), age(e.metadata.creation_timestamp, now)] for e in objs]


def node_status(n: t.Node) -> str:
    text = "Ready" if conditions.is_node_ready(n) else "NotReady"
    if n.spec.unschedulable:
        text += ",SchedulingDisabled"
    return text


def node_roles(n: t.Node) -> str:
    roles = set()
    for key, value in n.metadata.labels.items():
        if key.startswith("node-role.kubernetes.io/"):
            roles.add(key.split("/", 1)[1])
        elif key == "kubernetes.io/role":
            roles.add(value)
    return ",".join(sorted(r for r in roles if r)) or NONE


def node_address(n: t.Node, kind: str) -> str:
    return next((a.address for a in n.status.addresses if a.type == kind), NONE)


def _nodes(objs: Sequence[t.Node], now: float, wide: bool) -> tuple[Row, list[Row]]:
    header = ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    if wide:
        header += ["INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"]
    out = []
    for n in objs:
        row = [n.metadata.name, node_status(n), node_roles(n), age(n.metadata.creation_timestamp, now),
               n.status.node_info.kubelet_version or NONE]
        if wide:
            info = n.status.node_info
            row += [node_address(n, "InternalIP"), node_address(n, "ExternalIP"), info.os_image or NONE,
                    info.kernel_version or NONE, info.container_runtime_version or NONE]
        out.append(row)
    return header, out


def event_time(ev: t.Event) -> Timestamp:
    for ts in (ev.last_timestamp, ev.first_timestamp, ev.metadata.creation_timestamp):
        if ts.seconds or ts.nanos:
            return ts
    return ev.metadata.creation_timestamp


def event_object(ev: t.Event) -> str:
    kind = kinds.by_kind(ev.involved_object.kind)
    prefix = kind.singular if kind is not None else ev.involved_object.kind.lower()
    return f"{prefix}/{ev.involved_object.name}"


def _events(objs: Sequence[t.Event], now: float, wide: bool) -> tuple[Row, list[Row]]:
    return ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], [
        [age(event_time(e), now), e.type or "Normal", e.reason, event_object(e), e.message] for e in objs]


def _namespaces(objs: Sequence[t.Namespace], now: float, wide: bool) -> tuple[Row, list[Row]]:
    return ["NAME", "STATUS", "AGE"], [
        [n.metadata.name, n.status.phase or "Active", age(n.metadata.creation_timestamp, now)] for n in objs]


def _leases(objs: Sequence[t.Lease], now: float, wide: bool) -> tuple[Row, list[Row]]:
    return ["NAME", "HOLDER", "AGE"], [
        [lease.metadata.name, lease.spec.holder_identity or NONE, age(lease.metadata.creation_timestamp, now)]
        for lease in objs]


def _configmaps(objs: Sequence[t.ConfigMap], now: float, wide: bool) -> tuple[Row, list[Row]]:
    return ["NAME", "DATA", "AGE"], [
        [cm.metadata.name, str(len(cm.data) + len(cm.binary_data)), age(cm.metadata.creation_timestamp, now)]
        for cm in objs]


def _secrets(objs: Sequence[t.Secret], now: float, wide: bool) -> tuple[Row, list[Row]]:
    return ["NAME", "TYPE", "DATA", "AGE"], [
        [s.metadata.name, s.type or "Opaque", str(len(s.data)), age(s.metadata.creation_timestamp, now)]
        for s in objs]


def _serviceaccounts(objs: Sequence[t.ServiceAccount], now: float, wide: bool) -> tuple[Row, list[Row]]:
    return ["NAME", "SECRETS", "AGE"], [
        [sa.metadata.name, str(len(sa.secrets)), age(sa.metadata.creation_timestamp, now)] for sa in objs]


def _limitranges(objs: Sequence[t.LimitRange], now: float, wide: bool) -> tuple[Row, list[Row]]:
    return ["NAME", "CREATED AT"], [
        [lr.metadata.name, format_timestamp(lr.metadata.creation_timestamp)] for lr in objs]


def _quota_pairs(quota: t.ResourceQuota, limits: bool) -> str:
    names = sorted(n for n in quota.spec.hard if n.startswith("limits.") == limits)
    return ", ".join(f"{n}: {quota.status.used.get(n, '0')}/{quota.spec.hard[n]}" for n in names)


def _resourcequotas(objs: Sequence[t.ResourceQuota], now: float, wide: bool) -> tuple[Row, list[Row]]:
    return ["NAME", "AGE", "REQUEST", "LIMIT"], [
        [q.metadata.name, age(q.metadata.creation_timestamp, now), _quota_pairs(q, False), _quota_pairs(q, True)]
        for q in objs]


# ---------------------------------------------------------------------- workloads (kubectl's columns)

def _daemonsets(objs: Sequence[t.DaemonSet], now: float, wide: bool) -> tuple[Row, list[Row]]:
    header = ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE SELECTOR", "AGE"]
    header += ["CONTAINERS", "IMAGES", "SELECTOR"] if wide else []
    out = []
    for d in objs:
        s = d.status
        row = [d.metadata.name, str(s.desired_number_scheduled), str(s.current_number_scheduled),
               str(s.number_ready), str(s.updated_number_scheduled), str(s.number_available),
               map_text(d.spec.template.spec.node_selector), age(d.metadata.creation_timestamp, now)]
        if wide:
            row += [*containers_and_images(d.spec.template.spec), selector_text(d.spec.selector)]
        out.append(row)
    return header, out


def job_status(job: t.Job) -> str:
    """kubectl's STATUS column of a Job."""
    for ctype in ("Failed", "Complete", "Suspended", "FailureTarget", "SuccessCriteriaMet"):
        if any(c.type == ctype and c.status == "True" for c in job.status.conditions):
            return ctype
    return "Running"


def job_completions(job: t.Job) -> str:
    succeeded = job.status.succeeded
    if job.spec.HasField("completions"):
        return f"{succeeded}/{job.spec.completions}"
    parallelism = job.spec.parallelism if job.spec.HasField("parallelism") else 1
    return f"{succeeded}/1 of {parallelism}" if parallelism > 1 else f"{succeeded}/1"


def job_duration(job: t.Job, now: float) -> str:
    if not job.status.HasField("start_time"):
        return ""
    start = job.status.start_time.seconds + job.status.start_time.nanos / 1e9
    if job.status.HasField("completion_time"):
        end = job.status.completion_time.seconds + job.status.completion_time.nanos / 1e9
    else:
        end = now
    return human_duration(end - start)


def _jobs(objs: Sequence[t.Job], now: float, wide: bool) -> tuple[Row, list[Row]]:
    header = ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"] + (["CONTAINERS", "IMAGES", "SELECTOR"]
                                                                    if wide else [])
    out = []
    for j in objs:
        row = [j.metadata.name, job_status(j), job_completions(j), job_duration(j, now),
               age(j.metadata.creation_timestamp, now)]
        if wide:
            row += [*containers_and_images(j.spec.template.spec), selector_text(j.spec.selector)]
        out.append(row)
    return header, out


def _cronjobs(objs: Sequence[t.CronJob], now: float, wide: bool) -> tuple[Row, list[Row]]:
    header = ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST SCHEDULE", "AGE"]
    header += ["CONTAINERS", "IMAGES", "SELECTOR"] if wide else []
    out = []
    for c in objs:
        last = age(c.status.last_schedule_time, now) if c.status.HasField("last_schedule_time") else NONE
        row = [c.metadata.name, c.spec.schedule, c.spec.time_zone if c.spec.HasField("time_zone") else NONE,
               "True" if c.spec.suspend else "False", str(len(c.status.active)), last,
               age(c.metadata.creation_timestamp, now)]
        if wide:
            tmpl = c.spec.job_template.spec
            row += [*containers_and_images(tmpl.template.spec), selector_text(tmpl.selector)]
        out.append(row)
    return header, out


def _statefulsets(objs: Sequence[t.StatefulSet], now: float, wide: bool) -> tuple[Row, list[Row]]:
    header = ["NAME", "READY", "AGE"] + (["CONTAINERS", "IMAGES"] if wide else [])
    out = []
    for s in objs:
        row = [s.metadata.name, f"{s.status.ready_replicas}/{s.spec.replicas}", age(s.metadata.creation_timestamp, now)]
        if wide:
            row += containers_and_images(s.spec.template.spec)
        out.append(row)
    return header, out


def _controllerrevisions(objs: Sequence[t.ControllerRevision], now: float, wide: bool) -> tuple[Row, list[Row]]:
    out = []
    for r in objs:
        ref = next((o for o in r.metadata.owner_references if o.controller), None)
        owner = NONE
        if ref is not None:
            kind = kinds.by_kind(ref.kind)
            owner = f"{kind.qualified if kind else ref.kind.lower()}/{ref.name}"
        out.append([r.metadata.name, owner, str(r.revision), age(r.metadata.creation_timestamp, now)])
    return ["NAME", "CONTROLLER", "REVISION", "AGE"], out


# ---------------------------------------------------------------------- RBAC (kubectl's columns)

def _roles(objs: Sequence[t.Role | t.ClusterRole], now: float, wide: bool) -> tuple[Row, list[Row]]:
    return ["NAME", "CREATED AT"], [[r.metadata.name, format_timestamp(r.metadata.creation_timestamp)] for r in objs]


def _subjects(b: t.RoleBinding | t.ClusterRoleBinding, kind: str) -> str:
    if kind == "ServiceAccount":
        return ", ".join(f"{s.namespace}/{s.name}" for s in b.subjects if s.kind == kind)
    return ", ".join(s.name for s in b.subjects if s.kind == kind)


def _bindings(objs: Sequence[t.RoleBinding | t.ClusterRoleBinding], now: float, wide: bool) -> tuple[Row, list[Row]]:
    header = ["NAME", "ROLE", "AGE"] + (["USERS", "GROUPS", "SERVICEACCOUNTS"] if wide else [])
    out = []
    for b in objs:
        row = [b.metadata.name, f"{b.role_ref.kind}/{b.role_ref.name}", age(b.metadata.creation_timestamp, now)]
        if wide:
            row += [_subjects(b, "User"), _subjects(b, "Group"), _subjects(b, "ServiceAccount")]
        out.append(row)
    return header, out
def _networkpolicies(objs: Sequence[t.NetworkPolicy], now: float, wide: bool) -> tuple[Row, list[Row]]:
    # kubectl prints an empty podSelector (every pod of the namespace) as "<none>".
    return ["NAME", "POD-SELECTOR", "AGE"], [
        [p.metadata.name, selector_text(p.spec.pod_selector), age(p.metadata.creation_timestamp, now)] for p in objs]
def _storage(values: Any) -> str:
    return str(values.get("storage", ""))


def _storageclasses(objs: Sequence[t.StorageClass], now: float, wide: bool) -> tuple[Row, list[Row]]:
    out = []
    for sc in objs:
        name = sc.metadata.name + (" (default)" if storage.default_class([sc]) is not None else "")
        out.append([name, sc.provisioner, storage.reclaim_policy(sc), storage.binding_mode(sc),
                    str(sc.HasField("allow_volume_expansion") and sc.allow_volume_expansion).lower(),
                    age(sc.metadata.creation_timestamp, now)])
    return ["NAME", "PROVISIONER", "RECLAIMPOLICY", "VOLUMEBINDINGMODE", "ALLOWVOLUMEEXPANSION", "AGE"], out


def _persistentvolumes(objs: Sequence[t.PersistentVolume], now: float, wide: bool) -> tuple[Row, list[Row]]:
    header = ["NAME", "CAPACITY", "ACCESS MODES", "RECLAIM POLICY", "STATUS", "CLAIM", "STORAGECLASS",
              "VOLUMEATTRIBUTESCLASS", "REASON", "AGE"] + (["VOLUMEMODE"] if wide else [])
    out = []
    for pv in objs:
        ref = pv.spec.claim_ref
        claim = f"{ref.namespace}/{ref.name}" if ref.name else ""
        status = "Terminating" if pv.metadata.HasField("deletion_timestamp") else pv.status.phase
        row = [pv.metadata.name, _storage(pv.spec.capacity), storage.access_modes_short(pv.spec.access_modes),
               pv.spec.persistent_volume_reclaim_policy, status, claim, pv.spec.storage_class_name,
               "<unset>", pv.status.reason, age(pv.metadata.creation_timestamp, now)]
        if wide:
            row.append(pv.spec.volume_mode or "Filesystem")
        out.append(row)
    return header, out


def _persistentvolumeclaims(objs: Sequence[t.PersistentVolumeClaim], now: float,
                            wide: bool) -> tuple[Row, list[Row]]:
    header = ["NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS MODES", "STORAGECLASS", "VOLUMEATTRIBUTESCLASS",
              "AGE"] + (["VOLUMEMODE"] if wide else [])
    out = []
    for pvc in objs:
        status = "Terminating" if pvc.metadata.HasField("deletion_timestamp") else pvc.status.phase
        row = [pvc.metadata.name, status, pvc.spec.volume_name, _storage(pvc.status.capacity),
               storage.access_modes_short(pvc.status.access_modes), storage.claim_class(pvc) or "<unset>", "<unset>",
               age(pvc.metadata.creation_timestamp, now)]
        if wide:
            row.append(pvc.spec.volume_mode or "Filesystem")
        out.append(row)
    return header, out


PRINTERS: dict[str, Callable[[Sequence[Any], float, bool], tuple[Row, list[Row]]]] = {
    "pods": _pods,
    "deployments": _deployments,
    "replicasets": _replicasets,
    "services": _services,
    "endpoints": _endpoints,
    "nodes": _nodes,
    "events": _events,
    "namespaces": _namespaces,
    "leases": _leases,
    "configmaps": _configmaps,
    "secrets": _secrets,
    "serviceaccounts": _serviceaccounts,
    "limitranges": _limitranges,
    "resourcequotas": _resourcequotas,
    "daemonsets": _daemonsets,
    "jobs": _jobs,
    "cronjobs": _cronjobs,
    "statefulsets": _statefulsets,
    "controllerrevisions": _controllerrevisions,
    "roles": _roles,
    "clusterroles": _roles,
    "rolebindings": _bindings,
    "clusterrolebindings": _bindings,
    "networkpolicies": _networkpolicies,
    "storageclasses": _storageclasses,
    "persistentvolumes": _persistentvolumes,
    "persistentvolumeclaims": _persistentvolumeclaims,
}


def rows(kind: kinds.Kind, objs: Sequence[Message], *, now: float, wide: bool = False,
         with_namespace: bool = False, with_kind: bool = False) -> tuple[Row, list[Row]]:
    """Header and rows for `objs` of one kind; NAMESPACE first with -A, "kind/name" with several kinds."""
    if kind.resource == "events":  # oldest first, as kubectl sorts them
        objs = sorted(objs, key=lambda e: (event_time(e).seconds, event_time(e).nanos))  # type: ignore[arg-type]
    header, body = PRINTERS[kind.resource](objs, now, wide)
    names = [o.metadata.name for o in objs]  # type: ignore[attr-defined]
    namespaces = [o.metadata.namespace for o in objs]  # type: ignore[attr-defined]
    if with_kind and kind.resource != "events":
        body = [[f"{kind.qualified}/{name}", *row[1:]] for name, row in zip(names, body, strict=True)]
    if with_namespace and kind.namespaced:
        header = ["NAMESPACE", *header]
        body = [[ns, *row] for ns, row in zip(namespaces, body, strict=True)]
    return header, body


# ---------------------------------------------------------------------- -o yaml|json|name

def as_data(obj: Message) -> dict[str, Any]:
    return to_data(obj)


def as_list_data(objs: Sequence[Message]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "items": [as_data(o) for o in objs],
            "metadata": {"resourceVersion": ""}}


def render_yaml(objs: Sequence[Message], *, single: bool) -> str:
    data = as_data(objs[0]) if single and len(objs) == 1 else as_list_data(objs)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def render_json(objs: Sequence[Message], *, single: bool) -> str:
    data = as_data(objs[0]) if single and len(objs) == 1 else as_list_data(objs)
    return json.dumps(data, indent=4)


def render_names(objs: Sequence[Message]) -> str:
    return "\n".join(f"{kinds.of_message(o).qualified}/{o.metadata.name}" for o in objs)  # type: ignore[attr-defined]

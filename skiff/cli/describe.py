"""`skiff describe KIND NAME | KIND/NAME`: a readable account of an object and its recent Events.

Events are found with the field selector involvedObject.kind/name/namespace. The text
layout follows kubectl's (aligned "Key:  value" lines, nested sections indented by two).
`render(obj, events, ...)` is pure, for tests.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import yaml
from google.protobuf.message import Message

from skiff import errors, kinds
from skiff.cli import common, printers
from skiff.client import Client
from skiff.convert import to_data
from skiffpb.api.v1 import types_pb2 as t

NONE = "<none>"


def register(sub: Any) -> None:
    p = sub.add_parser("describe", help="show details of objects and their recent events")
    p.add_argument("targets", nargs="+", metavar="KIND NAME...|KIND/NAME...")
    common.add_connection_flags(p)
    p.set_defaults(func=main)


class Writer:
    """Collects `Key:  value` lines; a block's keys are aligned to its longest key."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def block(self, pairs: Sequence[tuple[str, str]], indent: int = 0) -> None:
        width = max((len(k) for k, _ in pairs), default=0) + 3  # "Key:" and two spaces
        for key, value in pairs:
            head = " " * indent + f"{key}:".ljust(width)
            lines = str(value).split("\n") if value != "" else [""]
            self.lines.append((head + lines[0]).rstrip())
            self.lines.extend(" " * (indent + width) + extra for extra in lines[1:])

    def line(self, text: str = "") -> None:
        self.lines.append(text)

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]], indent: int = 2) -> None:
        underline = ["-" * len(h) for h in header]
        for line in printers.table(header, [underline, *rows]).splitlines():
            self.lines.append(" " * indent + line)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _map(values: Any) -> str:
    return "\n".join(f"{k}={v}" for k, v in sorted(values.items())) or NONE


def _time(ts: Any) -> str:
    if not ts.seconds and not ts.nanos:
        return NONE
    return time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(ts.seconds))


def _controlled_by(meta: t.ObjectMeta) -> list[tuple[str, str]]:
    for ref in meta.owner_references:
        if ref.controller:
            return [("Controlled By", f"{ref.kind}/{ref.name}")]
    return []


def _header(obj: Message, kind: kinds.Kind) -> list[tuple[str, str]]:
    meta: t.ObjectMeta = common.meta(obj)
    pairs = [("Name", meta.name)]
    if kind.namespaced:
        pairs.append(("Namespace", meta.namespace))
    pairs += [("Labels", _map(meta.labels)),
              ("Annotations", _map({k: v for k, v in meta.annotations.items()
                                    if k != "kubectl.kubernetes.io/last-applied-configuration"})),
              ("CreationTimestamp", _time(meta.creation_timestamp))]
    if meta.HasField("deletion_timestamp"):
        pairs.append(("Terminating since", f"{_time(meta.deletion_timestamp)} "
                                           f"(grace period {meta.deletion_grace_period_seconds}s)"))
    if meta.finalizers:
        pairs.append(("Finalizers", "[" + " ".join(meta.finalizers) + "]"))
    return pairs


def _ports(c: t.Container) -> str:
    return ", ".join(f"{p.container_port}/{p.protocol or 'TCP'}" for p in c.ports) or NONE


def _state(state: t.ContainerState) -> list[tuple[str, str]]:
    if state.HasField("running"):
        return [("State", "Running"), ("  Started", _time(state.running.started_at))]
    if state.HasField("waiting"):
        return [("State", "Waiting"), ("  Reason", state.waiting.reason or NONE)]
    if state.HasField("terminated"):
        term = state.terminated
        return [("State", "Terminated"), ("  Reason", term.reason or NONE), ("  Exit Code", str(term.exit_code)),
                ("  Started", _time(term.started_at)), ("  Finished", _time(term.finished_at))]
    return [("State", "Waiting")]


def _probe(probe: t.Probe) -> str:
    if probe.HasField("exec"):
        action = "exec [" + " ".join(probe.exec.command) + "]"
    elif probe.HasField("http_get"):
        action = f"http-get {probe.http_get.path or '/'} port {to_data(probe.http_get).get('port', '')}"
    else:
        action = f"tcp-socket port {to_data(probe.tcp_socket).get('port', '')}"
    return (f"{action} delay={probe.initial_delay_seconds}s timeout={probe.timeout_seconds}s "
            f"period={probe.period_seconds}s #success={probe.success_threshold} #failure={probe.failure_threshold}")


def _containers(w: Writer, spec: t.PodSpec, statuses: Sequence[t.ContainerStatus] = (), indent: int = 0, *,
                title: str = "Containers", init: bool = False) -> None:
    containers = spec.init_containers if init else spec.containers
    if init and not containers:
        return
    w.line(" " * indent + f"{title}:")
    by_name = {s.name: s for s in statuses}
    for c in containers:
        w.line(" " * (indent + 2) + f"{c.name}:")
        pairs = [("Image", c.image), ("Port", _ports(c))]
        if c.command:
            pairs.append(("Command", " ".join(c.command)))
        if c.args:
            pairs.append(("Args", " ".join(c.args)))
        status = by_name.get(c.name)
        if status is not None:
            pairs += _state(status.state)
            pairs += [("Ready", str(status.ready)), ("Restart Count", str(status.restart_count))]
        if c.resources.limits:
            pairs.append(("Limits", _map(c.resources.limits)))
        if c.resources.requests:
            pairs.append(("Requests", _map(c.resources.requests)))
        for probe_name, title in (("liveness_probe", "Liveness"), ("readiness_probe", "Readiness")):
            if c.HasField(probe_name):
                pairs.append((title, _probe(getattr(c, probe_name))))
        env = "\n".join(f"{e.name}: {_env_value(e)}" for e in c.env) or NONE
        if c.env_from:
            pairs.append(("Environment Variables from", "\n".join(_env_from(src) for src in c.env_from)))
        pairs.append(("Environment", env))
        mounts = "\n".join(f"{m.mount_path}{' from ' + m.name}{f' ({m.sub_path})' if m.sub_path else ''} "
                           f"({'ro' if m.read_only else 'rw'})" for m in c.volume_mounts) or NONE
        pairs.append(("Mounts", mounts))
        w.block(pairs, indent + 4)


def _env_value(e: t.EnvVar) -> str:
    """As kubectl describes a variable: its value, or where it comes from (never a Secret's value)."""
    if not e.HasField("value_from"):
        return e.value
    src = e.value_from
    if src.HasField("config_map_key_ref"):
        return f"<set to the key '{src.config_map_key_ref.key}' of config map '{src.config_map_key_ref.name}'>"
    if src.HasField("secret_key_ref"):
        return f"<set to the key '{src.secret_key_ref.key}' in secret '{src.secret_key_ref.name}'>"
    if src.HasField("field_ref"):
        return f"({src.field_ref.api_version or 'v1'}:{src.field_ref.field_path})"
    ref = src.resource_field_ref
    return f"{ref.resource} ({ref.container_name or 'this container'}, divisor {ref.divisor or '1'})"


def _env_from(src: t.EnvFromSource) -> str:
    if src.HasField("config_map_ref"):
        what, name = "ConfigMap", src.config_map_ref.name
    else:
        what, name = "Secret", src.secret_ref.name
    return f"{name}  {what}  Optional: false" + (f"  Prefix: {src.prefix}" if src.prefix else "")


def _volumes(w: Writer, spec: t.PodSpec) -> None:
    if not spec.volumes:
        return
    w.line("Volumes:")
    for v in spec.volumes:
        w.line(f"  {v.name}:")
        source = next((f for f in ("host_path", "empty_dir", "secret", "config_map", "downward_api", "projected",
                                   "persistent_volume_claim") if v.HasField(f)), "")
        data = to_data(getattr(v, source)) if source else {}
        pairs = [("Type", {"host_path": "HostPath", "empty_dir": "EmptyDir", "secret": "Secret",
                           "config_map": "ConfigMap", "downward_api": "DownwardAPI",
                           "projected": "Projected",
                           "persistent_volume_claim": "PersistentVolumeClaim"}.get(source, NONE))]
        for key, value in data.items():
            shown = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip()
            pairs.append((key[0].upper() + key[1:], shown))
        w.block(pairs, 4)


def describe_config_map(w: Writer, cm: t.ConfigMap) -> None:
    w.block(_header(cm, kinds.of_message(cm)))
    w.line("Data")
    w.line("====")
    for key, value in sorted(cm.data.items()):
        w.line(f"{key}:")
        w.line("----")
        w.line(value.rstrip("\n"))
        w.line("")
    if cm.binary_data:
        w.line("BinaryData")
        w.line("====")
        for key, data in sorted(cm.binary_data.items()):
            w.line(f"{key}: {len(data)} bytes")


def describe_secret(w: Writer, s: t.Secret) -> None:
    """Keys and sizes only: a Secret's values are never printed by describe (as kubectl)."""
    w.block([*_header(s, kinds.of_message(s)), ("Type", s.type or "Opaque")])
    w.line("Data")
    w.line("====")
    for key, data in sorted(s.data.items()):
        w.line(f"{key}:  {len(data)} bytes")


def _conditions(w: Writer, conditions: Sequence[Any], *, reason: bool = False) -> None:
    if not conditions:
        return
    w.line("Conditions:")
    header = ["Type", "Status"] + (["Reason"] if reason else [])
    rows = [[c.type, c.status] + ([c.reason or NONE] if reason else []) for c in conditions]
    w.table(header, rows)


def _events(w: Writer, events: Sequence[t.Event], now: float) -> None:
    if not events:
        w.line("Events:  <none>")
        return
    w.line("Events:")
    ordered = sorted(events, key=lambda e: (printers.event_time(e).seconds, printers.event_time(e).nanos))
    rows = []
    for e in ordered:
        seen = printers.age(printers.event_time(e), now)
        if e.count > 1:
            seen = f"{seen} (x{e.count})"
        rows.append([e.type or "Normal", e.reason, seen, e.source.component or e.reporting_component or NONE,
                     e.message])
    w.table(["Type", "Reason", "Age", "From", "Message"], rows)


def describe_pod(w: Writer, p: t.Pod) -> None:
    node = p.spec.node_name
    if node and p.status.host_ip:
        node += f"/{p.status.host_ip}"
    head = _header(p, kinds.of_message(p))
    w.block([*head[:2], ("Node", node or NONE), ("Start Time", _time(p.status.start_time)), *head[2:],
             ("Status", printers.pod_status(p)[0]), ("IP", p.status.pod_ip or NONE), *_controlled_by(p.metadata)])
    _containers(w, p.spec, p.status.init_container_statuses, title="Init Containers", init=True)
    _containers(w, p.spec, p.status.container_statuses)
    _conditions(w, p.status.conditions)
    _volumes(w, p.spec)
    if p.status.qos_class:
        w.block([("QoS Class", p.status.qos_class)])
    if p.spec.node_selector:
        w.block([("Node-Selectors", _map(p.spec.node_selector))])
    if p.spec.tolerations:
        w.block([("Tolerations", "\n".join(f"{x.key}{'=' + x.value if x.value else ''}:{x.effect or '*'}"
                                          for x in p.spec.tolerations))])


def _template(w: Writer, template: t.PodTemplateSpec) -> None:
    w.line("Pod Template:")
    w.block([("Labels", _map(template.metadata.labels))], 2)
    _containers(w, template.spec, indent=2)


def describe_deployment(w: Writer, d: t.Deployment, rsets: Sequence[t.ReplicaSet]) -> None:
    s = d.status
    strategy = d.spec.strategy
    replicas = (f"{d.spec.replicas} desired | {s.updated_replicas} updated | {s.replicas} total | "
                f"{s.available_replicas} available | {s.unavailable_replicas} unavailable")
    pairs = [*_header(d, kinds.of_message(d)), ("Selector", printers.selector_text(d.spec.selector)),
             ("Replicas", replicas), ("StrategyType", strategy.type or "RollingUpdate"),
             ("MinReadySeconds", str(d.spec.min_ready_seconds))]
    if strategy.type in ("", "RollingUpdate"):
        ru = to_data(strategy.rolling_update)
        pairs.append(("RollingUpdateStrategy", f"{ru.get('maxUnavailable', '25%')} max unavailable, "
                                               f"{ru.get('maxSurge', '25%')} max surge"))
    w.block(pairs)
    _template(w, d.spec.template)
    _conditions(w, d.status.conditions, reason=True)
    mine = [rs for rs in rsets if any(r.controller and r.uid == d.metadata.uid for r in rs.metadata.owner_references)]
    current = d.metadata.annotations.get("deployment.kubernetes.io/revision", "")
    new = [rs for rs in mine if rs.metadata.annotations.get("deployment.kubernetes.io/revision", "") == current]
    old = [rs for rs in mine if rs not in new and rs.spec.replicas > 0]

    def describe_rs(rs: t.ReplicaSet) -> str:
        return f"{rs.metadata.name} ({rs.status.replicas}/{rs.spec.replicas} replicas created)"

    w.block([("OldReplicaSets", ", ".join(describe_rs(rs) for rs in old) or NONE),
             ("NewReplicaSet", ", ".join(describe_rs(rs) for rs in new) or NONE)])


def describe_replicaset(w: Writer, rs: t.ReplicaSet) -> None:
    s = rs.status
    w.block([*_header(rs, kinds.of_message(rs)), ("Selector", printers.selector_text(rs.spec.selector)),
             ("Replicas", f"{s.replicas} current / {rs.spec.replicas} desired"),
             ("Pods Status", f"{s.ready_replicas} Ready / {s.available_replicas} Available"),
             *_controlled_by(rs.metadata)])
    _template(w, rs.spec.template)


def describe_service(w: Writer, svc: t.Service, endpoints: t.Endpoints | None) -> None:
    pairs = [*_header(svc, kinds.of_message(svc))[:4], ("Selector", printers.map_text(svc.spec.selector)),
             ("Type", svc.spec.type or "ClusterIP"), ("IP", svc.spec.cluster_ip or NONE)]
    for p in svc.spec.ports:
        proto = p.protocol or "TCP"
        target = to_data(p).get("targetPort", p.port)
        pairs += [("Port", f"{p.name or '<unset>'}  {p.port}/{proto}"), ("TargetPort", f"{target}/{proto}")]
        if p.node_port:
            pairs.append(("NodePort", f"{p.name or '<unset>'}  {p.node_port}/{proto}"))
        ep_text = NONE
        if endpoints is not None:
            ep_text = printers.endpoints_text(endpoints, limit=10**6)
        pairs.append(("Endpoints", ep_text))
    pairs.append(("Session Affinity", svc.spec.session_affinity or "None"))
    w.block(pairs)


def describe_node(w: Writer, n: t.Node, pods: Sequence[t.Pod]) -> None:
    taints = "\n".join(f"{x.key}{'=' + x.value if x.value else ''}:{x.effect}" for x in n.spec.taints) or NONE
    w.block([("Name", n.metadata.name), ("Roles", printers.node_roles(n)), ("Labels", _map(n.metadata.labels)),
             ("CreationTimestamp", _time(n.metadata.creation_timestamp)), ("Taints", taints),
             ("Unschedulable", str(n.spec.unschedulable).lower())])
    if n.status.conditions:
        w.line("Conditions:")
        w.table(["Type", "Status", "LastHeartbeatTime", "Reason", "Message"],
                [[c.type, c.status, _time(c.last_heartbeat_time), c.reason or NONE, c.message or NONE]
                 for c in n.status.conditions])
    w.line("Addresses:")
    w.block([(a.type, a.address) for a in n.status.addresses] or [("<none>", "")], 2)
    for title, values in (("Capacity", n.status.capacity), ("Allocatable", n.status.allocatable)):
        if values:
            w.line(f"{title}:")
            w.block(sorted(values.items()), 2)
    info = n.status.node_info
    w.line("System Info:")
    w.block([("Kernel Version", info.kernel_version or NONE), ("OS Image", info.os_image or NONE),
             ("Container Runtime Version", info.container_runtime_version or NONE),
             ("Kubelet Version", info.kubelet_version or NONE)], 2)
    w.block([("PodCIDR", n.spec.pod_cidr or NONE)])
    w.line(f"Non-terminated Pods:  ({len(pods)} in total)")
    if pods:
        w.table(["Namespace", "Name", "Age"], [[p.metadata.namespace, p.metadata.name,
                                                printers.age(p.metadata.creation_timestamp, time.time())]
                                               for p in pods])


def describe_generic(w: Writer, obj: Message, kind: kinds.Kind) -> None:
    w.block(_header(obj, kind))
    data = to_data(obj)
    for section in ("spec", "status", "subsets", "involvedObject", "reason", "message", "source"):
        if section in data:
            value = data[section]
            if isinstance(value, dict | list):
                w.line(f"{section[0].upper()}{section[1:]}:")
                for line in yaml.safe_dump(value, sort_keys=False, default_flow_style=False).splitlines():
                    w.line("  " + line)
            else:
                w.block([(section[0].upper() + section[1:], str(value))])


def render(obj: Message, events: Sequence[t.Event], *, now: float, related: Any = None) -> str:
    """The describe text for `obj`; `related` is what its kind shows beside it (see main)."""
    kind = kinds.of_message(obj)
    w = Writer()
    if isinstance(obj, t.Pod):
        describe_pod(w, obj)
    elif isinstance(obj, t.Deployment):
        describe_deployment(w, obj, related or [])
    elif isinstance(obj, t.ReplicaSet):
        describe_replicaset(w, obj)
    elif isinstance(obj, t.Service):
        describe_service(w, obj, related)
    elif isinstance(obj, t.Node):
        describe_node(w, obj, related or [])
    elif isinstance(obj, t.ConfigMap):
        describe_config_map(w, obj)
    elif isinstance(obj, t.Secret):
        describe_secret(w, obj)
    else:
        describe_generic(w, obj, kind)
    if kind.resource != "events":
        _events(w, events, now)
    return w.text()


async def related_objects(client: Client, obj: Message) -> Any:
    meta = common.meta(obj)
    if isinstance(obj, t.Deployment):
        return list((await client.list(t.ReplicaSet, namespace=meta.namespace)).items)
    if isinstance(obj, t.Service):
        try:
            return await client.get(t.Endpoints, meta.name, meta.namespace)
        except errors.NotFoundError:
            return None
    if isinstance(obj, t.Node):
        pods = (await client.list(t.Pod, field_selector=f"spec.nodeName={meta.name}")).items
        return [p for p in pods if p.status.phase not in ("Succeeded", "Failed")]
    return None


async def events_for(client: Client, obj: Message, kind: kinds.Kind) -> list[t.Event]:
    meta = common.meta(obj)
    selector = f"involvedObject.kind={kind.kind},involvedObject.name={meta.name}"
    namespace = meta.namespace or "default"
    if kind.namespaced:
        selector += f",involvedObject.namespace={meta.namespace}"
    listed = await client.list(t.Event, namespace=namespace if kind.namespaced else "", field_selector=selector)
    return [e for e in listed.items if not e.involved_object.uid or e.involved_object.uid == meta.uid]


def main(args: argparse.Namespace) -> int:
    targets = common.targets(args.targets)
    namespace = common.namespace(args)

    async def body(client: Client) -> int:
        texts = []
        for kind, name in targets:
            obj = await client.get(kind.message, name, namespace if kind.namespaced else "")
            events = await events_for(client, obj, kind)
            texts.append(render(obj, events, now=time.time(), related=await related_objects(client, obj)))
        print("\n\n".join(text.rstrip("\n") for text in texts))
        return 0

    return common.run(args, body)


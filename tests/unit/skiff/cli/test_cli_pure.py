"""Pure parts of the CLI: tables, ages, pod status, apply's merge, rollout logic, config file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from skiff import config, errors, kinds
from skiff.cli import apply, printers, rollout
from skiff.cli.describe import render
from skiff.cli.main import build_parser
from skiffpb.api.v1 import types_pb2 as t
from tests.support.builders import deployment, node, pod, service

NOW = 1_000_000.0


@pytest.mark.parametrize("seconds,text", [
    (0, "0s"), (-1, "0s"), (-5, "<invalid>"), (45, "45s"), (119, "119s"), (120, "2m"), (182, "3m2s"),
    (599, "9m59s"), (600, "10m"), (3 * 3600 - 1, "179m"), (3 * 3600, "3h"), (5 * 3600 + 60, "5h1m"),
    (8 * 3600, "8h"), (47 * 3600, "47h"), (48 * 3600, "2d"), (51 * 3600, "2d3h"), (8 * 86400, "8d"),
    (400 * 86400, "400d"), (800 * 86400, "2y70d"), (10 * 365 * 86400, "10y"),
], ids=lambda v: str(v))
def test_human_duration(seconds: int, text: str) -> None:
    assert printers.human_duration(seconds) == text


def _running_pod(name: str, *, ready: bool = True, restarts: int = 0) -> t.Pod:
    p = pod(name, node="n1")
    p.metadata.creation_timestamp.seconds = int(NOW) - 65
    p.status.phase = "Running"
    p.status.pod_ip = "10.244.1.5"
    cs = p.status.container_statuses.add(name="main", ready=ready, restart_count=restarts)
    cs.state.running.started_at.seconds = int(NOW) - 60
    return p


def _pod_with(state: str, **fields: Any) -> t.Pod:
    p = _running_pod("p")
    cs = p.status.container_statuses[0]
    cs.state.ClearField("running")
    getattr(cs.state, state).SetInParent()
    for key, value in fields.items():
        setattr(getattr(cs.state, state), key, value)
    return p


def _terminating() -> t.Pod:
    p = _running_pod("p")
    p.metadata.deletion_timestamp.seconds = int(NOW)
    return p


@pytest.mark.parametrize("make,status,ready", [
    (lambda: pod("p"), "Pending", "0/1"),
    (lambda: _running_pod("p"), "Running", "1/1"),
    (lambda: _running_pod("p", ready=False), "Running", "0/1"),
    (lambda: _pod_with("waiting", reason="CrashLoopBackOff"), "CrashLoopBackOff", "0/1"),
    (lambda: _pod_with("waiting", reason="ContainerCreating"), "ContainerCreating", "0/1"),
    (lambda: _pod_with("terminated", reason="Completed"), "Completed", "0/1"),
    (lambda: _pod_with("terminated", exit_code=2), "ExitCode:2", "0/1"),
    (lambda: _pod_with("terminated", signal=9), "Signal:9", "0/1"),
    (_terminating, "Terminating", "1/1"),
], ids=["pending", "running", "not-ready", "crashloop", "creating", "completed", "exit-code", "signal",
        "terminating"])
def test_pod_status_column(make: Any, status: str, ready: str) -> None:
    header, rows = printers.rows(kinds.by_kind("Pod"), [make()], now=NOW)  # type: ignore[arg-type]
    assert header == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert rows[0][1:3] == [ready, status]


def test_tables_look_like_kubectl() -> None:
    pods = [_running_pod("web-1", restarts=2), _running_pod("web-22")]
    header, rows = printers.rows(kinds.by_kind("Pod"), pods, now=NOW, wide=True)  # type: ignore[arg-type]
    assert printers.table(header, rows) == (
        "NAME     READY   STATUS    RESTARTS   AGE   IP           NODE\n"
        "web-1    1/1     Running   2          65s   10.244.1.5   n1\n"
        "web-22   1/1     Running   0          65s   10.244.1.5   n1")
    svc = service("web", type_="NodePort", node_port=30080, cluster_ip="10.96.0.10")
    svc.spec.ports[0].protocol = "TCP"
    header, rows = printers.rows(kinds.by_kind("Service"), [svc], now=NOW, with_namespace=True,  # type: ignore[arg-type]
                                 with_kind=True)
    assert header == ["NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert rows[0][1:6] == ["service/web", "NodePort", "10.96.0.10", "<none>", "80:30080/TCP"]
    ext = t.Service(metadata=t.ObjectMeta(name="db"), spec=t.ServiceSpec(type="ExternalName",
                                                                         external_name="db.example.com"))
    _, rows = printers.rows(kinds.by_kind("Service"), [ext], now=NOW)  # type: ignore[arg-type]
    assert rows[0][1:4] == ["ExternalName", "<none>", "db.example.com"]
    d = deployment("web", replicas=3)
    d.status.ready_replicas, d.status.updated_replicas, d.status.available_replicas = 2, 3, 2
    _, rows = printers.rows(kinds.by_kind("Deployment"), [d], now=NOW, wide=True)  # type: ignore[arg-type]
    assert rows[0][:4] == ["web", "2/3", "3", "2"] and rows[0][5:] == ["web", "nginx:1.25", "app=web"]
    ep = t.Endpoints(metadata=t.ObjectMeta(name="web"))
    subset = ep.subsets.add()
    for i in range(5):
        subset.addresses.add(ip=f"10.244.0.{i}")
    subset.ports.add(port=80)
    _, rows = printers.rows(kinds.by_kind("Endpoints"), [ep], now=NOW)  # type: ignore[arg-type]
    assert rows[0][1] == "10.244.0.0:80,10.244.0.1:80,10.244.0.2:80 + 2 more..."
    n = node("n1")
    n.status.conditions.add(type="Ready", status="True")
    n.spec.unschedulable = True
    n.metadata.labels["node-role.kubernetes.io/control-plane"] = ""
    _, rows = printers.rows(kinds.by_kind("Node"), [n], now=NOW)  # type: ignore[arg-type]
    assert rows[0][1:3] == ["Ready,SchedulingDisabled", "control-plane"]


def test_output_formats() -> None:
    p = pod("web-1")
    assert printers.render_names([p, deployment("d")]) == "pod/web-1\ndeployment.apps/d"
    assert printers.render_yaml([p], single=True).startswith("apiVersion: v1\nkind: Pod\n")
    assert '"kind": "List"' in printers.render_json([p, p], single=False)


@pytest.mark.parametrize("live,last,desired,merged", [
    ({"a": 1, "b": 2}, {}, {"a": 3}, {"a": 3, "b": 2}),
    ({"a": 1, "b": 2}, {"a": 1, "b": 2}, {"a": 1}, {"a": 1}),
    ({"m": {"x": "1", "y": "2"}}, {"m": {"x": "1"}}, {"m": {"z": "3"}}, {"m": {"y": "2", "z": "3"}}),
    ({"l": [1, 2], "s": {"k": 1}}, {"l": [1]}, {"l": [3]}, {"l": [3], "s": {"k": 1}}),
    ({"spec": {"replicas": 5, "x": 1}}, {"spec": {"x": 1}}, {"spec": {"x": 2}}, {"spec": {"replicas": 5, "x": 2}}),
], ids=["set", "remove-unapplied-field", "map-keys", "lists-replaced", "scaled-replicas-kept"])
def test_three_way_merge(live: Any, last: Any, desired: Any, merged: Any) -> None:
    assert apply.merge(live, last, desired) == merged


def test_apply_keeps_allocated_and_scaled_fields() -> None:
    manifest = deployment("web")  # no replicas in the manifest
    desired, _ = apply.with_last_applied(manifest)
    live = t.Deployment()
    live.CopyFrom(desired)
    live.spec.replicas = 4  # scaled since
    live.metadata.resource_version = "17"
    live.status.replicas = 4
    sent = apply.merged_object(live, desired)
    assert isinstance(sent, t.Deployment)
    assert sent.spec.replicas == 4 and sent.metadata.resource_version == "17"
    assert apply.LAST_APPLIED in sent.metadata.annotations


def _deploy_status(**fields: int) -> t.Deployment:
    d = deployment("web", replicas=3)
    d.metadata.generation = 2
    d.status.observed_generation = fields.pop("observed", 2)
    for key, value in fields.items():
        setattr(d.status, key, value)
    return d


@pytest.mark.parametrize("d,message,done", [
    (_deploy_status(observed=1), "Waiting for deployment spec update to be observed...", False),
    (_deploy_status(updated_replicas=1, replicas=3),
     'Waiting for deployment "web" rollout to finish: 1 out of 3 new replicas have been updated...', False),
    (_deploy_status(updated_replicas=3, replicas=4),
     'Waiting for deployment "web" rollout to finish: 1 old replicas are pending termination...', False),
    (_deploy_status(updated_replicas=3, replicas=3, available_replicas=2),
     'Waiting for deployment "web" rollout to finish: 2 of 3 updated replicas are available...', False),
    (_deploy_status(updated_replicas=3, replicas=3, available_replicas=3),
     'deployment "web" successfully rolled out', True),
], ids=["unobserved", "updating", "old-pending", "unavailable", "done"])
def test_rollout_status_message(d: t.Deployment, message: str, done: bool) -> None:
    assert rollout.status_message(d) == (message, done)


def test_rollout_deadline_is_an_error() -> None:
    d = _deploy_status()
    d.status.conditions.add(type="Progressing", status="False", reason="ProgressDeadlineExceeded")
    with pytest.raises(errors.FailedPreconditionError, match="exceeded its progress deadline"):
        rollout.status_message(d)


def _rs(revision: int, image: str, owner: t.Deployment) -> t.ReplicaSet:
    rs = t.ReplicaSet(metadata=t.ObjectMeta(name=f"web-{revision}"))
    rs.metadata.annotations[rollout.REVISION] = str(revision)
    rs.metadata.owner_references.add(kind="Deployment", name="web", uid=owner.metadata.uid, controller=True)
    rs.spec.template.CopyFrom(owner.spec.template)
    rs.spec.template.metadata.labels[rollout.TEMPLATE_HASH] = f"h{revision}"
    rs.spec.template.spec.containers[0].image = image
    return rs


def test_rollout_history_and_undo() -> None:
    d = deployment("web")
    d.metadata.uid = "uid-1"
    rsets = [_rs(2, "nginx:2", d), _rs(1, "nginx:1", d), _rs(3, "nginx:3", d)]
    stranger = _rs(9, "other", deployment("other"))
    assert rollout.history_lines(d, [*rsets, stranger]) == [
        "deployment.apps/web", "REVISION  CHANGE-CAUSE", "1         <none>", "2         <none>", "3         <none>"]
    template, revision = rollout.undo_template(d, rsets, 0)
    assert revision == 2 and template.spec.containers[0].image == "nginx:2"
    assert rollout.TEMPLATE_HASH not in template.metadata.labels
    assert rollout.undo_template(d, rsets, 1)[0].spec.containers[0].image == "nginx:1"
    with pytest.raises(errors.NotFoundError, match="revision 7"):
        rollout.undo_template(d, rsets, 7)
    with pytest.raises(errors.NotFoundError, match="no previous revision"):
        rollout.undo_template(d, rsets[:1], 0)


def test_describe_pod_with_events() -> None:
    p = _running_pod("web-1")
    p.metadata.owner_references.add(kind="ReplicaSet", name="web-abc", uid="u", controller=True)
    ev = t.Event(metadata=t.ObjectMeta(name="e1"), reason="Scheduled", type="Normal",
                 message="Successfully assigned default/web-1 to n1", source=t.EventSource(component="scheduler"))
    ev.last_timestamp.seconds = int(NOW) - 30
    text = render(p, [ev], now=NOW)
    assert "Name:               web-1\n" in text  # aligned to "CreationTimestamp:" plus two spaces
    assert "Controlled By:      ReplicaSet/web-abc" in text
    assert "Status:             Running" in text
    assert "  main:\n    Image:" in text
    assert "Events:\n  Type     Reason      Age   From        Message\n" in text
    assert "  Normal   Scheduled   30s   scheduler   Successfully assigned default/web-1 to n1" in text


def test_config_file_round_trip_and_precedence(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "config"
    config.write_config(["127.0.0.1:6443", "127.0.0.2:6443"], namespace="team", path=path)
    env = {"SKIFF_CONFIG": str(path)}
    loaded = config.load_config(environ=env)
    assert (loaded.server, loaded.namespace) == ("127.0.0.1:6443,127.0.0.2:6443", "team")
    assert config.resolve_server(environ=env) == "127.0.0.1:6443,127.0.0.2:6443"
    assert config.resolve_server(environ={**env, "SKIFF_SERVER": "h:1"}) == "h:1"
    assert config.resolve_server("flag:1", environ={**env, "SKIFF_SERVER": "h:1"}) == "flag:1"
    with pytest.raises(errors.InvalidError, match="no api-server configured"):
        config.resolve_server(environ={"SKIFF_CONFIG": str(tmp_path / "missing")})
    path.write_text("server: h:1\nsevrer: typo\n")
    with pytest.raises(errors.InvalidError, match="unknown key"):
        config.load_config(path)


def test_every_command_is_registered() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) >= {"get", "describe", "apply", "create", "delete", "scale", "rollout", "logs", "exec",  # type: ignore[attr-defined]
                                "version", "cluster-info"}


def test_describe_config_kinds_never_print_secret_values() -> None:
    cm = t.ConfigMap(metadata=t.ObjectMeta(name="cfg", namespace="default"), data={"greeting": "hello\n"},
                     binary_data={"blob": b"\x00\x01"})
    text = render(cm, [], now=0.0)
    assert "greeting:\n----\nhello\n" in text and "blob: 2 bytes" in text
    secret = t.Secret(metadata=t.ObjectMeta(name="s", namespace="default"), type="Opaque",
                      data={"password": b"s3cr3t"})
    text = render(secret, [], now=0.0)
    assert "password:  6 bytes" in text and "s3cr3t" not in text
    pod = t.Pod(metadata=t.ObjectMeta(name="p", namespace="default"))
    c = pod.spec.containers.add(name="c", image="img")
    c.env.add(name="PW", value_from=t.EnvVarSource(secret_key_ref=t.SecretKeySelector(name="s", key="password")))
    c.volume_mounts.add(name="cfg", mount_path="/etc/cfg", read_only=True)
    pod.spec.volumes.add(name="cfg", config_map=t.ConfigMapVolumeSource(name="cfg"))
    pod.status.qos_class = "BestEffort"
    text = render(pod, [], now=0.0)
    assert "PW: <set to the key 'password' in secret 's'>" in text
    assert "/etc/cfg from cfg (ro)" in text and "Type:  ConfigMap" in text and "QoS Class:  BestEffort" in text

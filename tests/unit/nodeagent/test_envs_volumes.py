"""Container environment ($(VAR) expansion, valueFrom, envFrom), volume files and mounts (pure),
and the atomic writer and volume manager on a real directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nodeagent.envs import ContainerConfigError, command_line, container_env, expand
from nodeagent.podconfig import container_config
from nodeagent.volumes import (
    VolumeManager,
    check_host_path,
    plan_files,
    plan_mounts,
    read_files,
    termination_message,
    tmpfs_options,
    write_atomic,
)
from skiff import podrefs
from skiffpb.api.v1 import types_pb2 as t
from skiffpb.cri.v1 import api_pb2 as cri


class Objects:
    """A ConfigSource over a dict, as the agent's informer caches are."""

    def __init__(self, *objs: t.ConfigMap | t.Secret) -> None:
        self.objs = {(type(o).__name__, o.metadata.namespace, o.metadata.name): o for o in objs}

    def config_map(self, namespace: str, name: str) -> t.ConfigMap | None:
        return self.objs.get(("ConfigMap", namespace, name))  # type: ignore[return-value]

    def secret(self, namespace: str, name: str) -> t.Secret | None:
        return self.objs.get(("Secret", namespace, name))  # type: ignore[return-value]


def cm(name: str = "cfg", **data: str) -> t.ConfigMap:
    return t.ConfigMap(metadata=t.ObjectMeta(name=name, namespace="default"), data=data)


def secret(name: str = "sec", **data: bytes) -> t.Secret:
    return t.Secret(metadata=t.ObjectMeta(name=name, namespace="default"), data=data)


SOURCE = Objects(cm(color="blue", size="3", **{"bad-name": "x"}), secret(password=b"s3cr3t", token=b"t"))


def pod(*containers: t.Container, volumes: tuple[t.Volume, ...] = ()) -> t.Pod:
    out = t.Pod(metadata=t.ObjectMeta(name="web-1", namespace="default", uid="u1", labels={"app": "web"}))
    out.spec.containers.extend(containers or [t.Container(name="app", image="i")])
    out.spec.volumes.extend(volumes)
    out.spec.node_name = "n1"
    out.status.pod_ip = "10.244.1.7"
    return out


@pytest.mark.parametrize(("text", "env", "want"), [
    ("$(A)", {"A": "1"}, "1"),
    ("x$(A)y$(B)", {"A": "1", "B": "2"}, "x1y2"),
    ("$(MISSING)", {}, "$(MISSING)"),
    ("$$(A)", {"A": "1"}, "$(A)"),
    ("$$", {}, "$"),
    ("$A", {"A": "1"}, "$A"),
    ("$(A", {"A": "1"}, "$(A"),
    ("tail$", {}, "tail$"),
    ("$()", {"": "empty"}, "empty"),
], ids=["one", "two", "undefined-kept", "escaped", "dollar-dollar", "no-parens", "unterminated", "trailing", "empty"])
def test_expand(text: str, env: dict[str, str], want: str) -> None:
    assert expand(text, env) == want


def env_var(name: str, value: str = "", **source: object) -> t.EnvVar:
    out = t.EnvVar(name=name, value=value)
    for key, ref in source.items():
        getattr(out.value_from, key).CopyFrom(ref)
    return out


def opt(value: bool) -> dict[str, bool]:
    return {"optional": value}


@pytest.mark.parametrize(("container", "want"), [
    (t.Container(env=[env_var("A", "1"), env_var("B", "$(A)-2"), env_var("C", "$(D)"), env_var("D", "4")]),
     [("A", "1"), ("B", "1-2"), ("C", "$(D)"), ("D", "4")]),
    (t.Container(env=[env_var("COLOR", config_map_key_ref=t.ConfigMapKeySelector(name="cfg", key="color")),
                      env_var("PW", secret_key_ref=t.SecretKeySelector(name="sec", key="password"))]),
     [("COLOR", "blue"), ("PW", "s3cr3t")]),
    (t.Container(env=[env_var("X", config_map_key_ref=t.ConfigMapKeySelector(name="nope", key="k", **opt(True))),
                      env_var("Y", secret_key_ref=t.SecretKeySelector(name="sec", key="nokey", **opt(True)))]),
     []),
    (t.Container(env=[env_var("N", field_ref=t.ObjectFieldSelector(field_path="metadata.name")),
                      env_var("IP", field_ref=t.ObjectFieldSelector(field_path="status.podIP")),
                      env_var("APP", field_ref=t.ObjectFieldSelector(field_path="metadata.labels['app']")),
                      env_var("MEM", resource_field_ref=t.ResourceFieldSelector(resource="limits.memory",
                                                                               divisor="1Mi"))],
                 resources=t.ResourceRequirements(limits={"memory": "64Mi"})),
     [("N", "web-1"), ("IP", "10.244.1.7"), ("APP", "web"), ("MEM", "64")]),
    (t.Container(env_from=[t.EnvFromSource(config_map_ref=t.ConfigMapEnvSource(name="cfg"), prefix="CFG_"),
                           t.EnvFromSource(secret_ref=t.SecretEnvSource(name="sec"))],
                 env=[env_var("token", "override"), env_var("ALL", "$(CFG_color)/$(password)")]),
     [("CFG_bad-name", "x"), ("CFG_color", "blue"), ("CFG_size", "3"), ("password", "s3cr3t"), ("token", "override"),
      ("ALL", "blue/s3cr3t")]),
    (t.Container(env_from=[t.EnvFromSource(config_map_ref=t.ConfigMapEnvSource(name="cfg"), prefix="1")]),
     []),
    (t.Container(env_from=[t.EnvFromSource(secret_ref=t.SecretEnvSource(name="gone", **opt(True)))]), []),
], ids=["literal-expansion-order", "key-refs", "optional-missing", "field-and-resource", "env-from-then-env",
        "invalid-names-skipped", "optional-env-from"])
def test_container_env(container: t.Container, want: list[tuple[str, str]]) -> None:
    container.name, container.image = "app", "i"
    assert container_env(pod(container), container, SOURCE) == want


@pytest.mark.parametrize(("container", "error"), [
    (t.Container(env=[env_var("X", config_map_key_ref=t.ConfigMapKeySelector(name="nope", key="k"))]),
     'configmap "nope" not found'),
    (t.Container(env=[env_var("X", secret_key_ref=t.SecretKeySelector(name="sec", key="nokey"))]),
     "couldn't find key nokey in Secret default/sec"),
    (t.Container(env_from=[t.EnvFromSource(secret_ref=t.SecretEnvSource(name="gone"))]), 'secret "gone" not found'),
], ids=["missing-configmap", "missing-key", "missing-env-from"])
def test_container_env_errors(container: t.Container, error: str) -> None:
    container.name = "app"
    with pytest.raises(ContainerConfigError, match=error):
        container_env(pod(container), container, SOURCE)


def test_command_and_args_expand_against_the_final_env() -> None:
    c = t.Container(name="app", image="i", command=["sh", "-c", "echo $(GREETING) $$(HOME)"], args=["$(LATER)"])
    assert command_line(c, {"GREETING": "hi", "LATER": "x"}) == (["sh", "-c", "echo hi $(HOME)"], ["x"])
    cfg = container_config(pod(c), c, 0, env=[("GREETING", "hi")], mounts=[cri.Mount(container_path="/d")])
    assert (list(cfg.command), [(e.key, e.value) for e in cfg.envs], cfg.mounts[0].container_path) == (
        ["sh", "-c", "echo hi $(HOME)"], [("GREETING", "hi")], "/d")


def volume(name: str, **source: object) -> t.Volume:
    out = t.Volume(name=name)
    for key, value in source.items():
        getattr(out, key).CopyFrom(value)
    return out


@pytest.mark.parametrize(("vol", "want"), [
    (volume("v", config_map=t.ConfigMapVolumeSource(name="cfg", default_mode=0o644)),
     {"color": (b"blue", 0o644), "size": (b"3", 0o644), "bad-name": (b"x", 0o644)}),
    (volume("v", config_map=t.ConfigMapVolumeSource(name="cfg", items=[t.KeyToPath(key="color", path="a/c.txt",
                                                                                    mode=0o400)])),
     {"a/c.txt": (b"blue", 0o400)}),
    (volume("v", secret=t.SecretVolumeSource(secret_name="sec", default_mode=0o440)),
     {"password": (b"s3cr3t", 0o440), "token": (b"t", 0o440)}),
    (volume("v", secret=t.SecretVolumeSource(secret_name="gone", optional=True)), {}),
    (volume("v", downward_api=t.DownwardAPIVolumeSource(items=[
        t.DownwardAPIVolumeFile(path="labels", field_ref=t.ObjectFieldSelector(field_path="metadata.labels")),
        t.DownwardAPIVolumeFile(path="cpu", resource_field_ref=t.ResourceFieldSelector(
            container_name="app", resource="limits.cpu", divisor="1m"))])),
     {"labels": (b'app="web"', 0o644), "cpu": (b"4000", 0o644)}),
    (volume("v", projected=t.ProjectedVolumeSource(default_mode=0o600, sources=[
        t.VolumeProjection(config_map=t.ConfigMapProjection(name="cfg", items=[t.KeyToPath(key="size", path="n")])),
        t.VolumeProjection(secret=t.SecretProjection(name="sec", items=[t.KeyToPath(key="token", path="tok")])),
        t.VolumeProjection(downward_api=t.DownwardAPIProjection(items=[t.DownwardAPIVolumeFile(
            path="name", field_ref=t.ObjectFieldSelector(field_path="metadata.name"))]))])),
     {"n": (b"3", 0o600), "tok": (b"t", 0o600), "name": (b"web-1", 0o600)}),
], ids=["configmap-all-keys", "configmap-items", "secret-mode", "optional-missing", "downward", "projected"])
def test_plan_files(vol: t.Volume, want: dict[str, tuple[bytes, int]]) -> None:
    assert plan_files(pod(t.Container(name="app", image="i")), vol, SOURCE, node_allocatable={"cpu": "4"}) == want


@pytest.mark.parametrize(("vol", "error"), [
    (volume("v", config_map=t.ConfigMapVolumeSource(name="nope")), 'configmap "nope" not found'),
    (volume("v", config_map=t.ConfigMapVolumeSource(name="cfg", items=[t.KeyToPath(key="k", path="k")])),
     "configuration key k not found in ConfigMap default/cfg"),
], ids=["missing", "missing-item"])
def test_plan_files_errors(vol: t.Volume, error: str) -> None:
    with pytest.raises(ContainerConfigError, match=error):
        plan_files(pod(), vol, SOURCE)


def test_plan_mounts_read_only_sub_path_and_propagation() -> None:
    c = t.Container(name="app", image="i", volume_mounts=[
        t.VolumeMount(name="cfg", mount_path="/etc/cfg"),
        t.VolumeMount(name="tmp", mount_path="/tmp/sub", sub_path="a/b"),
        t.VolumeMount(name="tmp", mount_path="/tmp/ro", read_only=True, mount_propagation="HostToContainer")])
    p = pod(c, volumes=(volume("cfg", config_map=t.ConfigMapVolumeSource(name="cfg")),
                        volume("tmp", empty_dir=t.EmptyDirVolumeSource())))
    mounts = plan_mounts(p, c, {"cfg": "/v/cfg", "tmp": "/v/tmp"})
    assert [(m.container_path, m.host_path, m.readonly, m.propagation) for m in mounts] == [
        ("/etc/cfg", "/v/cfg", True, cri.PROPAGATION_PRIVATE),
        ("/tmp/sub", "/v/tmp/a/b", False, cri.PROPAGATION_PRIVATE),
        ("/tmp/ro", "/v/tmp", True, cri.PROPAGATION_HOST_TO_CONTAINER)]


DIR, FILE = 0o040755, 0o100644


@pytest.mark.parametrize(("type_", "mode", "ok"), [
    ("", None, True), ("Directory", DIR, True), ("Directory", FILE, False), ("Directory", None, False),
    ("DirectoryOrCreate", None, True), ("File", FILE, True), ("File", DIR, False), ("FileOrCreate", None, True),
    ("Socket", FILE, False), ("Socket", 0o140755, True),
], ids=["no-check", "dir", "dir-is-file", "dir-missing", "dir-or-create", "file", "file-is-dir", "file-or-create",
        "socket-is-file", "socket"])
def test_host_path_type_check(type_: str, mode: int | None, ok: bool) -> None:
    assert (check_host_path("/p", type_, mode) is None) is ok


def test_tmpfs_size_from_size_limit() -> None:
    assert tmpfs_options(t.EmptyDirVolumeSource(medium="Memory", size_limit="16Mi")) == "mode=0777,size=16777216"
    assert tmpfs_options(t.EmptyDirVolumeSource(medium="Memory")) == "mode=0777"


def test_atomic_writer_swaps_data_and_keeps_unchanged(tmp_path: Path) -> None:
    d = str(tmp_path / "vol")
    assert write_atomic(d, {"a": (b"1", 0o644), "sub/b": (b"2", 0o400)})
    first = os.readlink(os.path.join(d, "..data"))
    assert (Path(d) / "a").read_bytes() == b"1" and (Path(d) / "sub" / "b").read_bytes() == b"2"
    assert os.readlink(os.path.join(d, "a")) == "..data/a"
    assert read_files(d) == {"a": (b"1", 0o644), "sub/b": (b"2", 0o400)}
    assert not write_atomic(d, {"a": (b"1", 0o644), "sub/b": (b"2", 0o400)}), "no change, no new ..data"
    assert os.readlink(os.path.join(d, "..data")) == first
    assert write_atomic(d, {"a": (b"new", 0o644)})
    assert (Path(d) / "a").read_bytes() == b"new"
    assert not os.path.lexists(os.path.join(d, "sub")), "a key that went away is gone"
    stamped = [e for e in os.listdir(d) if e.startswith("..") and e != "..data"]
    assert len(stamped) == 1 and os.path.join(d, stamped[0]) == os.path.realpath(os.path.join(d, "..data"))


def test_volume_manager_setup_refresh_teardown(tmp_path: Path) -> None:
    host = tmp_path / "host-dir"
    p = pod(volumes=(volume("cfg", config_map=t.ConfigMapVolumeSource(name="cfg", items=[
        t.KeyToPath(key="color", path="color")])), volume("tmp", empty_dir=t.EmptyDirVolumeSource()),
        volume("host", host_path=t.HostPathVolumeSource(path=str(host), type="DirectoryOrCreate"))))
    vm = VolumeManager(str(tmp_path / "volumes"))
    paths = vm.setup(p, SOURCE)
    assert paths == {"cfg": str(tmp_path / "volumes/u1/cfg"), "tmp": str(tmp_path / "volumes/u1/tmp"),
                     "host": str(host)}
    assert (Path(paths["cfg"]) / "color").read_text() == "blue" and host.is_dir()
    vm.refresh(p, Objects(cm(color="green")))
    assert (Path(paths["cfg"]) / "color").read_text() == "green"
    vm.refresh(p, Objects())  # the ConfigMap is gone: the last content stays
    assert (Path(paths["cfg"]) / "color").read_text() == "green"
    assert vm.pod_uids() == ["u1"]
    vm.teardown("u1")
    assert vm.pod_uids() == [] and host.is_dir(), "hostPath is never removed"
    bad = pod(volumes=(volume("h", host_path=t.HostPathVolumeSource(path=str(tmp_path / "nope"), type="File")),))
    with pytest.raises(ContainerConfigError, match="does not exist"):
        vm.setup(bad, SOURCE)


def test_referenced_config() -> None:
    c = t.Container(name="app", image="i", env=[
        env_var("A", config_map_key_ref=t.ConfigMapKeySelector(name="env-cm", key="k")),
        env_var("B", secret_key_ref=t.SecretKeySelector(name="env-sec", key="k"))],
        env_from=[t.EnvFromSource(config_map_ref=t.ConfigMapEnvSource(name="from-cm"))])
    p = pod(c, volumes=(volume("v", secret=t.SecretVolumeSource(secret_name="vol-sec")),
                        volume("p", projected=t.ProjectedVolumeSource(sources=[
                            t.VolumeProjection(config_map=t.ConfigMapProjection(name="proj-cm"))]))))
    assert podrefs.config_maps(p) == {"env-cm", "from-cm", "proj-cm"}
    assert podrefs.secrets(p) == {"env-sec", "vol-sec"}


@pytest.mark.parametrize(("written", "policy", "exit_code", "tail", "want"), [
    (b"bye", "File", 1, b"log\n", "bye"),
    (b"", "File", 1, b"log\n", ""),
    (b"", "FallbackToLogsOnError", 1, b"a\nb\n", "a\nb\n"),
    (b"", "FallbackToLogsOnError", 0, b"a\n", ""),
    (b"x" * 5000, "File", 0, b"", "x" * 4096),
    (b"", "FallbackToLogsOnError", 2, b"".join(b"%d\n" % i for i in range(100)),
     "".join(f"{i}\n" for i in range(20, 100))),
    (b"", "FallbackToLogsOnError", 2, b"y" * 3000 + b"\n", "y" * 2047 + "\n"),
], ids=["written", "nothing", "fallback", "fallback-success", "capped", "last-80-lines", "last-2048-bytes"])
def test_termination_message(written: bytes, policy: str, exit_code: int, tail: bytes, want: str) -> None:
    assert termination_message(written, policy=policy, exit_code=exit_code, log_tail=tail) == want


def test_termination_mount_is_a_fresh_file_per_attempt(tmp_path: Path) -> None:
    vm = VolumeManager(str(tmp_path))
    c = t.Container(name="app", image="i", termination_message_path="/dev/termination-log")
    mount = vm.termination_mount(pod(c), c, 3)
    assert (mount.container_path, mount.host_path, mount.readonly) == (
        "/dev/termination-log", str(tmp_path / "u1" / "..termination" / "app-3"), False)
    assert os.path.getsize(mount.host_path) == 0 and os.stat(mount.host_path).st_mode & 0o777 == 0o666

"""ConfigMaps, Secrets, volumes and resources on real containerd: env from ConfigMap/Secret and the
downward API, configMap/secret/downwardAPI/projected/emptyDir/hostPath volumes as CRI mounts,
a ConfigMap update reaching a running container atomically, volumes kept across an agent restart
and removed with the pod, a missing ConfigMap holding the container in CreateContainerConfigError,
and every examples/ directory of these features applied (resources: limits in the container's
cgroup, a pod over its memory limit OOMKilled). Same harness as test_nodeagent.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from skiff import errors, manifests
from skiffpb.api.v1 import types_pb2 as t
from tests.e2e import test_nodeagent as na
from tests.e2e.test_nodeagent import WEB, Harness, cstatus, running_ready, wait_for

pytestmark = pytest.mark.e2e
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
node = na.node  # the module's own containerd, as test_nodeagent.py has
h = na.h


@pytest.fixture(autouse=True)
async def privileged_default(h: Harness) -> None:
    """hostPath volumes need a namespace at Pod Security level privileged, as on Kubernetes."""
    ns = await h.api.get(t.Namespace, "default")
    ns.metadata.labels["pod-security.kubernetes.io/enforce"] = "privileged"
    await h.api.update(ns)


async def sh(h: Harness, pod: t.Pod, script: str) -> str:
    cid = cstatus(pod).container_id.removeprefix("containerd://")
    out = await h.runtime.exec_sync(cid, ["sh", "-c", script], 5)
    assert out.exit_code == 0, out.stderr
    return out.stdout.decode()


def config_pod(name: str, host_dir: str) -> t.Pod:
    pod = t.Pod(metadata=t.ObjectMeta(name=name, labels={"app": "cfg"}))
    pod.spec.termination_grace_period_seconds = 2
    c = pod.spec.containers.add(name="web", image=WEB, image_pull_policy="IfNotPresent")
    c.command.extend(["sh", "-c", "echo started $(GREETING) > /scratch/started; exec sleep 3600"])
    c.env.add(name="GREETING", value_from=t.EnvVarSource(
        config_map_key_ref=t.ConfigMapKeySelector(name="app-config", key="greeting")))
    c.env.add(name="PASSWORD", value_from=t.EnvVarSource(
        secret_key_ref=t.SecretKeySelector(name="app-secret", key="password")))
    c.env.add(name="POD_IP", value_from=t.EnvVarSource(field_ref=t.ObjectFieldSelector(field_path="status.podIP")))
    c.env.add(name="MEM_MI", value_from=t.EnvVarSource(
        resource_field_ref=t.ResourceFieldSelector(resource="limits.memory", divisor="1Mi")))
    c.env_from.add(prefix="CFG_", config_map_ref=t.ConfigMapEnvSource(name="app-config"))
    c.resources.limits.update({"memory": "64Mi", "cpu": "500m"})
    for vname, path, extra in (("config", "/etc/config", {}), ("secret", "/etc/secret", {}),
                               ("info", "/etc/podinfo", {}), ("all", "/etc/all", {}),
                               ("scratch", "/scratch", {}), ("ram", "/ram", {}),
                               ("host", "/host", {"sub_path": "sub", "read_only": True})):
        c.volume_mounts.add(name=vname, mount_path=path, **extra)
    v = pod.spec.volumes
    v.add(name="config", config_map=t.ConfigMapVolumeSource(name="app-config"))
    v.add(name="secret", secret=t.SecretVolumeSource(secret_name="app-secret", default_mode=0o400))
    v.add(name="info", downward_api=t.DownwardAPIVolumeSource(items=[
        t.DownwardAPIVolumeFile(path="labels", field_ref=t.ObjectFieldSelector(field_path="metadata.labels"))]))
    v.add(name="all", projected=t.ProjectedVolumeSource(sources=[
        t.VolumeProjection(config_map=t.ConfigMapProjection(name="app-config", items=[
            t.KeyToPath(key="greeting", path="g")])),
        t.VolumeProjection(secret=t.SecretProjection(name="app-secret"))]))
    v.add(name="scratch", empty_dir=t.EmptyDirVolumeSource())
    v.add(name="ram", empty_dir=t.EmptyDirVolumeSource(medium="Memory", size_limit="8Mi"))
    v.add(name="host", host_path=t.HostPathVolumeSource(path=host_dir, type="DirectoryOrCreate"))
    return pod


async def test_env_and_volumes_from_config_reach_the_container(h: Harness, tmp_path: Path) -> None:
    host_dir = tmp_path / "hostdata"
    (host_dir / "sub").mkdir(parents=True)
    (host_dir / "sub" / "hello").write_text("from the host\n")
    await h.api.create(t.ConfigMap(metadata=t.ObjectMeta(name="app-config"), data={"greeting": "hello",
                                                                                   "color": "blue"}))
    await h.api.create(t.Secret(metadata=t.ObjectMeta(name="app-secret"), string_data={"password": "s3cr3t"}))
    await h.api.create(config_pod("cfg", str(host_dir)))
    await h.api.bind("default", "cfg", "n1")
    pod = await running_ready(h, "cfg")
    assert pod.status.qos_class == "Guaranteed", "requests default to the limits"
    env = await sh(h, pod, "echo $GREETING $PASSWORD $POD_IP $MEM_MI $CFG_greeting $CFG_color")
    assert env.split() == ["hello", "s3cr3t", pod.status.pod_ip, "64", "hello", "blue"]
    assert await sh(h, pod, "cat /scratch/started") == "started hello\n", "$(VAR) expanded in the command"
    assert await sh(h, pod, "cat /etc/config/greeting /etc/secret/password /etc/all/g /etc/all/password") == (
        "hellos3cr3thellos3cr3t")
    assert await sh(h, pod, "cat /etc/podinfo/labels") == 'app="cfg"'
    assert await sh(h, pod, "stat -L -c %a /etc/secret/password") == "400\n"
    assert await sh(h, pod, "cat /host/hello") == "from the host\n"
    assert "Read-only" in await sh(h, pod, "touch /host/x 2>&1 || true")
    assert "Read-only" in await sh(h, pod, "touch /etc/config/x 2>&1 || true")
    assert "tmpfs" in await sh(h, pod, "grep ' /ram ' /proc/mounts")
    await sh(h, pod, "echo kept > /scratch/kept")

    # A ConfigMap update reaches the running container through the ..data symlink swap.
    cm = await h.api.get(t.ConfigMap, "app-config", "default")
    cm.data["greeting"] = "bonjour"
    await h.api.update(cm)

    async def updated() -> bool:
        return await sh(h, pod, "cat /etc/config/greeting") == "bonjour"

    await wait_for(updated, "the new greeting in the volume", 15)
    links = await sh(h, pod, "readlink /etc/config/greeting; readlink /etc/config/..data")
    assert links.startswith("..data/greeting\n..")
    assert await sh(h, pod, "cat /etc/all/g") == "bonjour"
    assert await sh(h, pod, "echo $GREETING") == "hello\n", "env is fixed when the container starts"

    # An agent restart keeps the volumes (and their content) of running pods.
    uid = pod.metadata.uid
    volume_root = Path(h.node.paths.pod_volumes) / uid
    await h.stop_agent()
    await h.start_agent()
    assert await sh(h, pod, "cat /scratch/kept") == "kept\n"
    assert (volume_root / "scratch" / "kept").exists()

    # Deleting the pod removes its volumes (the tmpfs unmounted first) but never the hostPath.
    await h.api.delete(t.Pod, "cfg", "default", grace_period_seconds=1)

    async def removed() -> bool:
        return not volume_root.exists()

    await wait_for(removed, "pod volumes removed", 30)
    assert not any(str(volume_root) in line for line in Path("/proc/self/mountinfo").read_text().splitlines())
    assert (host_dir / "sub" / "hello").exists()


async def test_missing_configmap_holds_the_container_until_it_exists(h: Harness) -> None:
    pod = t.Pod(metadata=t.ObjectMeta(name="waits"))
    pod.spec.termination_grace_period_seconds = 2
    c = pod.spec.containers.add(name="web", image=WEB, image_pull_policy="IfNotPresent")
    c.env.add(name="LATE", value_from=t.EnvVarSource(config_map_key_ref=t.ConfigMapKeySelector(name="late", key="k")))
    await h.api.create(pod)
    await h.api.bind("default", "waits", "n1")

    async def config_error() -> t.Pod | None:
        p = await h.pod("waits")
        return p if cstatus(p).state.waiting.reason == "CreateContainerConfigError" else None

    p = await wait_for(config_error, "CreateContainerConfigError", 20)
    assert cstatus(p).state.waiting.message == 'configmap "late" not found'
    await h.event("waits", "Failed", containing='configmap "late" not found')
    await h.api.create(t.ConfigMap(metadata=t.ObjectMeta(name="late"), data={"k": "arrived"}))
    p = await running_ready(h, "waits")
    assert await sh(h, p, "echo $LATE") == "arrived\n"


CGROUP_LIMITS = ("cd /sys/fs/cgroup; if [ -f memory.max ]; then cat memory.max cpu.max; "
                 "else cat memory/memory.limit_in_bytes cpu/cpu.cfs_quota_us cpu/cpu.cfs_period_us; fi")
CGROUP_SHARES = ("cd /sys/fs/cgroup; if [ -f cpu.weight ]; then echo v2; cat cpu.weight; "
                 "else echo v1; cat cpu/cpu.shares; fi")


async def apply_example(h: Harness, name: str) -> list[str]:
    """Create every object of examples/<name>/ through the registry, bind its pods to n1; the pod names."""
    pods = []
    for item in manifests.load([str(EXAMPLES / name)]):
        created = await h.api.create(item.obj)
        if isinstance(created, t.Pod):
            await h.api.bind("default", created.metadata.name, "n1")
            pods.append(created.metadata.name)
    return pods


async def test_example_configmap(h: Harness) -> None:
    assert await apply_example(h, "configmap") == ["configured"]
    pod = await running_ready(h, "configured")
    assert await sh(h, pod, "cat /tmp/greeting") == "hello from configured\n"
    assert await sh(h, pod, "echo $PASSWORD $CFG_greeting; cat /etc/config/greeting") == "s3cr3t hello\nhello"
    assert await sh(h, pod, "stat -L -c %a /etc/secret/password") == "400\n"


async def test_example_volumes(h: Harness) -> None:
    assert await apply_example(h, "volumes") == ["volumes"]
    pod = await running_ready(h, "volumes")
    assert await sh(h, pod, "cat /etc/podinfo/memory-mi; echo; cat /etc/podinfo/labels") == (
        '32\napp="volumes"\ntier="demo"')
    assert await sh(h, pod, "cat /etc/bundle/motd /etc/bundle/pod-name") == "welcomevolumes"
    assert "tmpfs" in await sh(h, pod, "grep ' /ram ' /proc/mounts")
    assert await sh(h, pod, "test -s /cache/started && echo yes") == "yes\n"
    assert Path("/tmp/skiff-examples/volumes-example").is_dir(), "hostPath DirectoryOrCreate and its subPath"


async def test_example_resources_reach_the_cgroup_and_oom_kills(h: Harness) -> None:
    assert await apply_example(h, "resources") == ["guaranteed", "burstable", "oom"]
    guaranteed = await running_ready(h, "guaranteed")
    burstable = await running_ready(h, "burstable")
    assert (guaranteed.status.qos_class, burstable.status.qos_class) == ("Guaranteed", "Burstable")
    # The cgroup as the container sees it (v2 or v1): CRI memory_limit_in_bytes, cpu_quota and
    # cpu_period arrived, and cpu_shares from the request (100m -> 102 shares; v2 maps it to a weight).
    limits = await sh(h, guaranteed, CGROUP_LIMITS)
    assert limits.split() == [str(32 * 2**20), "25000", "100000"]
    shares = (await sh(h, burstable, CGROUP_SHARES)).split()
    assert shares in (["v1", "102"], ["v2", "4"]), shares

    async def oom() -> t.Pod | None:
        p = await h.pod("oom")
        return p if cstatus(p).state.terminated.reason == "OOMKilled" else None

    p = await wait_for(oom, "the container OOMKilled", 40)
    assert (cstatus(p).state.terminated.exit_code, p.status.phase, p.status.qos_class) == (137, "Failed", "Guaranteed")


async def test_termination_message_from_file_and_from_logs(h: Harness) -> None:
    pod = t.Pod(metadata=t.ObjectMeta(name="finisher"))
    pod.spec.restart_policy = "Never"
    pod.spec.termination_grace_period_seconds = 1
    pod.spec.containers.add(name="writes", image=WEB, image_pull_policy="IfNotPresent",
                            command=["sh", "-c", "echo 'it broke' > /dev/termination-log; exit 3"])
    pod.spec.containers.add(name="logs", image=WEB, image_pull_policy="IfNotPresent",
                            termination_message_policy="FallbackToLogsOnError",
                            command=["sh", "-c", "echo first; echo last words; exit 1"])
    await h.api.create(pod)
    await h.api.bind("default", "finisher", "n1")

    async def failed() -> t.Pod | None:
        p = await h.pod("finisher")
        return p if p.status.phase == "Failed" else None

    p = await wait_for(failed, "the pod Failed", 30)
    by_name = {s.name: s.state.terminated for s in p.status.container_statuses}
    assert (by_name["writes"].exit_code, by_name["writes"].message) == (3, "it broke\n")
    assert (by_name["logs"].exit_code, by_name["logs"].message) == (1, "first\nlast words\n")


async def test_lifecycle_hooks_run_in_the_container(h: Harness, tmp_path: Path) -> None:
    out = tmp_path / "hooks"
    pod = t.Pod(metadata=t.ObjectMeta(name="hooked"))
    pod.spec.termination_grace_period_seconds = 5
    c = pod.spec.containers.add(name="web", image=WEB, image_pull_policy="IfNotPresent",
                                command=["sh", "-c", "exec sleep 3600"])
    c.lifecycle.post_start.exec.command.extend(["sh", "-c", "echo started > /out/post"])
    c.lifecycle.pre_stop.exec.command.extend(["sh", "-c", "echo stopping > /out/pre"])
    c.volume_mounts.add(name="out", mount_path="/out")
    pod.spec.volumes.add(name="out", host_path=t.HostPathVolumeSource(path=str(out), type="DirectoryOrCreate"))
    await h.api.create(pod)
    await h.api.bind("default", "hooked", "n1")
    await running_ready(h, "hooked")
    assert (out / "post").read_text() == "started\n"
    await h.api.delete(t.Pod, "hooked", "default")

    async def pre_stop_ran() -> bool:
        return (out / "pre").exists()

    await wait_for(pre_stop_ran, "the preStop hook's file", 20)
    assert (out / "pre").read_text() == "stopping\n"


async def test_example_quota_defaults_reach_the_cgroup_and_the_third_pod_is_refused(h: Harness) -> None:
    assert await apply_example(h, "quota") == ["defaulted"]
    pod = await running_ready(h, "defaulted")
    c = pod.spec.containers[0]
    assert (dict(c.resources.limits), dict(c.resources.requests)) == ({"cpu": "250m", "memory": "64Mi"},
                                                                      {"cpu": "100m", "memory": "32Mi"})
    assert pod.status.qos_class == "Burstable"
    assert (await sh(h, pod, CGROUP_LIMITS)).split() == [str(64 * 2**20), "25000", "100000"]
    second = t.Pod(metadata=t.ObjectMeta(name="second"))
    second.spec.containers.add(name="app", image=WEB, command=["sh", "-c", "exec sleep 3600"])
    third = t.Pod()
    third.CopyFrom(second)
    third.metadata.name = "third"
    await h.api.create(second)
    await h.api.settle()
    with pytest.raises(errors.ForbiddenError, match="exceeded quota: small, requested: pods=1, used: pods=2"):
        await h.api.create(third)

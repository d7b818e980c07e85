"""Pure pieces of the node agent and its shared helpers: rendering, images, logs, routes, Ready."""

from __future__ import annotations

import io
import json
import os
import random
import tarfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from nodeagent import logs, network, node, podconfig, probes, worker
from nodeagent.agent import on_tick
from skiff import hostconfig, images
from skiffpb.api.v1 import types_pb2 as t
from skiffpb.cri.v1 import api_pb2 as cri


def test_containerd_config_has_the_essential_settings(tmp_path: Path) -> None:
    paths = hostconfig.NodePaths(tmp_path / "n1")
    text = hostconfig.render_containerd_config(hostconfig.ContainerdSettings.for_node(paths))
    conf = tomllib.loads(text)
    cri_conf = conf["plugins"]["io.containerd.grpc.v1.cri"]
    assert conf["version"] == 2
    assert (conf["root"], conf["state"], conf["grpc"]["address"]) == (
        str(paths.root), str(paths.state), str(paths.socket))
    assert cri_conf["restrict_oom_score_adj"] is True
    assert cri_conf["netns_mounts_under_state_dir"] is True
    assert cri_conf["sandbox_image"] == images.PAUSE_IMAGE
    assert cri_conf["cni"] == {"bin_dir": "/usr/lib/cni", "conf_dir": str(paths.cni_conf_dir), "max_conf_num": 1}
    runc = cri_conf["containerd"]["runtimes"]["runc"]
    assert runc["options"] == {"Root": str(paths.runc_root), "SystemdCgroup": False}
    assert hostconfig.write_node_config(paths) is True
    assert hostconfig.write_node_config(paths) is False  # unchanged: not rewritten


def test_cni_conflist() -> None:
    conf = json.loads(hostconfig.render_cni_conflist(hostconfig.CniSettings("10.244.1.0/24", "/x/ipam")))
    bridge = conf["plugins"][0]
    assert (bridge["type"], bridge["hairpinMode"], bridge["ipMasq"], bridge["isGateway"], bridge["forceAddress"]) == (
        "bridge", True, False, True, True)
    assert bridge["ipam"]["dataDir"] == "/x/ipam"
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.244.1.0/24"}]]


@pytest.mark.parametrize("cidr", ["10.244.1.1/24", "fd00::/64", "banana", "10.0.0.0/31"],
                         ids=["host-bits", "ipv6", "garbage", "too-small"])
def test_cni_conflist_rejects_bad_cidr(cidr: str) -> None:
    with pytest.raises(ValueError, match="podCIDR"):
        hostconfig.render_cni_conflist(hostconfig.CniSettings(cidr, "/x"))


@pytest.mark.parametrize(("ref", "want"), [
    ("web", "docker.io/library/web:latest"), ("skiff/web:1.0", "docker.io/skiff/web:1.0"),
    ("nginx:latest", "docker.io/library/nginx:latest"), ("localhost:5000/a/b", "localhost:5000/a/b:latest"),
    ("quay.io/x/y@sha256:ab", "quay.io/x/y@sha256:ab"),
], ids=["bare", "user-repo", "tag", "registry-port", "digest"])
def test_normalize_ref(ref: str, want: str) -> None:
    assert images.normalize_ref(ref) == want


def test_image_layout_is_reproducible_with_symlinked_applets(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("hi\n")
    spec = images.ImageSpec(name="demo/site:2", busybox=True, from_dir=tmp_path / "site",
                            entrypoint=["/bin/httpd", "-f"], env=["A=1"], workdir="/srv")
    a, b = images.build_oci_layout(spec), images.build_oci_layout(spec)
    assert a == b
    index = json.loads(a["index.json"])
    desc = index["manifests"][0]
    assert desc["annotations"]["io.containerd.image.name"] == "docker.io/demo/site:2"
    manifest = json.loads(a["blobs/sha256/" + desc["digest"].split(":")[1]])
    config = json.loads(a["blobs/sha256/" + manifest["config"]["digest"].split(":")[1]])
    assert config["config"]["Entrypoint"] == ["/bin/httpd", "-f"]
    assert config["config"]["WorkingDir"] == "/srv" and config["config"]["Env"] == ["A=1"]
    layer = a["blobs/sha256/" + manifest["layers"][0]["digest"].split(":")[1]]
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["bin/busybox"].isfile() and members["bin/busybox"].mode == 0o755
    assert members["bin/sh"].issym() and members["bin/sh"].linkname == "busybox"
    assert not any(m.islnk() for m in members.values())  # no hard links: they unpack with the wrong mode
    assert members["index.html"].isfile()
    assert all(m.mtime == 0 and m.uid == 0 for m in members.values())


LOG = (b"2024-01-01T00:00:00.1Z stdout F one\n"
       b"2024-01-01T00:00:00.2Z stderr P tw\n"
       b"2024-01-01T00:00:00.3Z stderr F o\n"
       b"2024-01-01T00:00:00.4Z stdout F three\n"
       b"2024-01-01T00:00:00.5Z stdout F unfinished")


async def _all(path: Path, **kw: int) -> bytes:
    return b"".join([chunk async for chunk in logs.stream(str(path), **kw)])  # type: ignore[arg-type]


@pytest.mark.parametrize(("tail_lines", "want"), [
    (0, b"one\ntwo\nthree\n"), (1, b"three\n"), (2, b"two\nthree\n"), (3, b"one\ntwo\nthree\n"),
    (50, b"one\ntwo\nthree\n"),
], ids=["all", "tail-1", "tail-2-joins-partials", "tail-3", "tail-more-than-there-is"])
async def test_cri_log_decoding_and_tail(tmp_path: Path, tail_lines: int, want: bytes) -> None:
    path = tmp_path / "0.log"
    path.write_bytes(LOG)  # the unfinished record is held back
    assert await _all(path, tail_lines=tail_lines) == want
    if tail_lines:
        assert logs.tail(str(path), tail_lines) == want
    assert await _all(tmp_path / "missing") == b"" and logs.tail(str(tmp_path / "missing"), 3) == b""


def test_tail_of_a_large_log_reads_backwards_in_chunks(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    with open(path, "wb") as f:
        for i in range(60_000):  # ~2.5 MB: many chunks
            f.write(b"2024-01-01T00:00:00.1Z stdout F line %d\n" % i)
    assert logs.tail(str(path), 3) == b"line 59997\nline 59998\nline 59999\n"


@pytest.mark.timeout(10)
async def test_log_stream_follows_until_the_container_stops(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    path.write_bytes(b"T stdout F a\n")
    running = {"v": True}

    async def still_running() -> bool:
        return running["v"]

    got = []
    async for chunk in logs.stream(str(path), follow=True, still_running=still_running, poll=0.01):
        got.append(chunk)
        if len(got) == 1:
            with open(path, "ab") as f:
                f.write(b"T stdout F b\n")
        elif len(got) == 2:
            with open(path, "ab") as f:
                f.write(b"T stdout F written-as-it-stopped\n")
            running["v"] = False
    assert got == [b"a\n", b"b\n", b"written-as-it-stopped\n"]


@pytest.mark.timeout(10)
async def test_log_stream_follows_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    path.write_bytes(b"T stdout F before\n")
    running = {"v": True}

    async def still_running() -> bool:
        return running["v"]

    got = []
    async for chunk in logs.stream(str(path), follow=True, still_running=still_running, poll=0.01):
        got.append(chunk)
        if chunk == b"before\n":
            with open(path, "ab") as f:
                f.write(b"T stdout F last-of-the-old-file\n")
            os.rename(path, str(path) + ".20240101-000000")  # as the agent rotates
            path.write_bytes(b"T stdout F first-of-the-new-file\n")  # as the runtime reopens
        if chunk == b"first-of-the-new-file\n":
            running["v"] = False
    assert b"".join(got) == b"before\nlast-of-the-old-file\nfirst-of-the-new-file\n"


@dataclass(frozen=True)
class RotationCase:
    id: str
    size: int
    rotated: tuple[str, ...]
    max_files: int
    remove: tuple[str, ...]
    rename: bool


NOW = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
ROTATIONS = [
    RotationCase("small-nothing-to-do", 10, (), 5, (), False),
    RotationCase("reached-max-size", 100, (), 5, (), True),
    RotationCase("room-made-oldest-first", 100, ("0.log.20230101-000003", "0.log.20230101-000001",
                                                 "0.log.20230101-000002", "0.log.20230101-000004"), 5,
                 ("0.log.20230101-000001",), True),
    RotationCase("excess-removed-without-rotating", 10, ("0.log.20230101-000001", "0.log.20230101-000002",
                                                         "0.log.20230101-000003"), 2,
                 ("0.log.20230101-000001", "0.log.20230101-000002"), False),
    RotationCase("two-files-keeps-none-rotated-before", 100, ("0.log.20230101-000001",), 2,
                 ("0.log.20230101-000001",), True),
    RotationCase("same-second-does-not-overwrite", 100, ("0.log.20231114-221320",), 5, (), False),
]


@pytest.mark.parametrize("case", ROTATIONS, ids=lambda c: c.id)
def test_plan_rotation(case: RotationCase) -> None:
    plan = logs.plan_rotation("0.log", case.size, list(case.rotated), max_size=100, max_files=case.max_files,
                              now=NOW)
    assert plan.remove == case.remove
    assert plan.rename_to == ("0.log.20231114-221320" if case.rename else "")


def _node(name: str, cidr: str, ip: str, *, deleting: bool = False) -> t.Node:
    n = t.Node()
    n.metadata.name = name
    n.spec.pod_cidr = cidr
    if ip:
        n.status.addresses.add(type="InternalIP", address=ip)
    if deleting:
        n.metadata.deletion_timestamp.FromSeconds(1)
    return n


def test_routes_plan() -> None:
    nodes = [_node("n1", "10.244.1.0/24", "10.0.0.1"), _node("n2", "10.244.2.0/24", "10.0.0.2"),
             _node("n3", "10.244.3.0/24", "10.0.0.3"), _node("n4", "", "10.0.0.4"),
             _node("n5", "10.244.5.0/24", ""), _node("n6", "10.244.6.0/24", "10.0.0.6", deleting=True)]
    desired = network.desired_routes("n1", nodes)
    assert desired == {"10.244.2.0/24": "10.0.0.2", "10.244.3.0/24": "10.0.0.3"}
    plan = network.plan_routes(desired, {"10.244.2.0/24": "10.0.0.2", "10.244.3.0/24": "10.0.0.99",
                                         "10.244.9.0/24": "10.0.0.9"})
    assert dict(plan.add) == {"10.244.3.0/24": "10.0.0.3"}
    assert plan.delete == ("10.244.9.0/24",)


async def test_network_manager_with_memory_routes(tmp_path: Path) -> None:
    from nodeagent.netns import NodeNetwork

    routes = network.MemoryRoutes()
    mgr = network.NetworkManager(node_name="n1", net=NodeNetwork(), routes=routes, cni_conf_dir=str(tmp_path / "cni"),
                                 ipam_dir=str(tmp_path / "ipam"), manage_sysctls=False)
    await mgr.sync([_node("n1", "", "10.0.0.1")])
    assert not (tmp_path / "cni").exists()  # no podCIDR yet: no CNI config, the runtime stays NetworkNotReady
    await mgr.sync([_node("n1", "10.244.1.0/24", "10.0.0.1"), _node("n2", "10.244.2.0/24", "10.0.0.2")])
    assert "10.244.1.0/24" in (tmp_path / "cni" / hostconfig.CNI_CONFLIST_NAME).read_text()
    assert routes.routes == {"10.244.2.0/24": "10.0.0.2"}
    await mgr.sync([_node("n1", "10.244.1.0/24", "10.0.0.1")])
    assert routes.routes == {}


def _status(runtime: bool, net: bool) -> cri.StatusResponse:
    return cri.StatusResponse(status=cri.RuntimeStatus(conditions=[
        cri.RuntimeCondition(type="RuntimeReady", status=runtime),
        cri.RuntimeCondition(type="NetworkReady", status=net, reason="NetworkPluginNotReady",
                             message="cni config uninitialized")]))


@pytest.mark.parametrize(("status", "error", "want"), [
    (_status(True, True), "", ("True", "KubeletReady")),
    (None, "connection refused", ("False", "ContainerRuntimeDown")),
    (_status(False, True), "", ("False", "ContainerRuntimeNotReady")),
    (_status(True, False), "", ("False", "NetworkPluginNotReady")),
], ids=["ready", "runtime-down", "runtime-not-ready", "network-not-ready"])
def test_compute_ready_condition(status: cri.StatusResponse | None, error: str, want: tuple[str, str]) -> None:
    cond = node.compute_ready_condition(status, error, [], 100.0)
    assert (cond.status, cond.reason) == want
    if error:
        assert error in cond.message
    again = node.compute_ready_condition(status, error, [cond], 200.0)
    assert again.last_transition_time.seconds == 100 and again.last_heartbeat_time.seconds == 200


@pytest.mark.parametrize(("limits", "requests", "want"), [
    ({}, {}, (2, 0, 0, 0)),
    ({"cpu": "500m", "memory": "64Mi"}, {}, (512, 50000, 100000, 64 << 20)),
    ({"cpu": "2"}, {"cpu": "250m"}, (256, 200000, 100000, 0)),
    ({}, {"cpu": "1m"}, (2, 0, 0, 0)),
], ids=["best-effort", "limits-only", "request-and-limit", "tiny-request"])
def test_linux_resources(limits: dict[str, str], requests: dict[str, str], want: tuple[int, int, int, int]) -> None:
    c = t.Container(name="c", image="x", resources=t.ResourceRequirements(limits=limits, requests=requests))
    r = podconfig.linux_resources(c)
    assert (r.cpu_shares, r.cpu_quota, r.cpu_period, r.memory_limit_in_bytes) == want


def test_container_config_carries_pod_labels_and_log_path() -> None:
    pod = t.Pod()
    pod.metadata.name, pod.metadata.namespace, pod.metadata.uid = "p", "ns", "u1"
    c = pod.spec.containers.add(name="web", image="skiff/web:1.0", command=["/bin/sh"], args=["-c", "x"],
                                env=[t.EnvVar(name="A", value="1")])
    cfg = podconfig.container_config(pod, c, 3)
    assert cfg.labels["io.kubernetes.pod.uid"] == "u1" and cfg.labels["io.kubernetes.container.name"] == "web"
    assert (cfg.metadata.attempt, cfg.log_path, list(cfg.command), list(cfg.args)) == (3, "web/3.log", ["/bin/sh"],
                                                                                       ["-c", "x"])
    assert [(e.key, e.value) for e in cfg.envs] == [("A", "1")]
    sb = podconfig.sandbox_config(pod, 1, podconfig.PodConfigSettings("/logs", "/skiff-n1"))
    assert (sb.hostname, sb.log_directory, sb.linux.cgroup_parent) == ("p", "/logs/ns_p_u1", "/skiff-n1")


@pytest.mark.parametrize(("outcomes", "initial", "want_changes"), [
    ([False, False, False], True, [False, False, True]),  # liveness: flips after 3 failures
    ([False, True, False, False, False], True, [False, False, False, False, True]),
    ([True], False, [True]),  # readiness: one success makes it ready
], ids=["three-failures", "success-resets-count", "ready-after-success"])
def test_probe_counter(outcomes: list[bool], initial: bool, want_changes: list[bool]) -> None:
    counter = probes.ProbeCounter.for_probe(t.Probe(), initial=initial)
    assert [counter.observe(o) for o in outcomes] == want_changes


def test_named_probe_port() -> None:
    c = t.Container(name="c", ports=[t.ContainerPort(name="http", container_port=8080)])
    assert probes.resolve_port(t.IntOrString(str_val="http"), c) == 8080
    assert probes.resolve_port(t.IntOrString(int_val=81), c) == 81
    with pytest.raises(ValueError, match="not a named port"):
        probes.resolve_port(t.IntOrString(str_val="grpc"), c)


def _status(ready: str) -> t.PodStatus:
    s = t.PodStatus(phase="Running")
    s.conditions.add(type="Ready", status=ready)
    return s


@pytest.mark.parametrize(("in_api", "rv", "last", "write"), [
    ("True", "7", None, False),
    ("False", "7", None, True),
    ("False", "7", ("True", 9), False),
    ("False", "9", ("True", 9), False),
    ("False", "12", ("True", 9), True),
    ("False", "7", ("False", 9), True),
], ids=["api-says-it", "never-written", "cache-lags-our-write", "at-our-write", "changed-by-someone-else",
        "last-write-was-different"])
def test_status_write_needed(in_api: str, rv: str, last: tuple[str, int] | None, write: bool) -> None:
    """We want Ready=True; the pod in the cache says `in_api` at revision `rv`."""
    pod = t.Pod(status=_status(in_api))
    pod.metadata.resource_version = rv
    want = _status("True").SerializeToString(deterministic=True)
    last_written = None if last is None else (_status(last[0]).SerializeToString(deterministic=True), last[1])
    assert worker.status_write_needed(want, pod, last_written) == write


@pytest.mark.parametrize(("rv", "pending", "own", "left"), [
    ("9", set(), False, set()),
    ("9", {9}, True, set()),
    ("9", {9, 11}, True, {11}),
    ("10", {9, 11}, False, {11}),
    ("8", {9}, False, {9}),
    ("", {9}, False, {9}),
], ids=["nothing-written", "our-write", "first-of-two-writes", "someone-else-between-our-writes",
        "someone-else-before-our-write", "no-revision"])
def test_is_own_echo(rv: str, pending: set[int], own: bool, left: set[int]) -> None:
    """Only the revision one of our status writes made is its echo; older pending ones can no longer come."""
    pod = t.Pod()
    pod.metadata.resource_version = rv
    assert worker.is_own_echo(pod, pending) == own
    assert pending == left


@pytest.mark.parametrize(("items", "fingerprint"), [
    ([], ()),
    ([("c1", 1), ("s1", 0)], (("c1", 1), ("s1", 0))),
    ([("s1", 0), ("c1", 1)], (("c1", 1), ("s1", 0))),
], ids=["nothing", "sorted", "order-does-not-matter"])
def test_runtime_fingerprint(items: list[tuple[str, int]], fingerprint: tuple[tuple[str, int], ...]) -> None:
    assert worker.runtime_fingerprint(items) == fingerprint


@pytest.mark.parametrize(("now", "delay", "tick", "offset", "wait"), [
    (100.2, 3.0, 0.0, 0.0, 3.0),
    (100.2, 3.0, 1.0, 0.0, 3.8),
    (100.0, 3.0, 1.0, 0.0, 3.0),
    (100.2, 3.0, 1.0, 0.5, 3.3),
    (100.7, 3.0, 1.0, 0.5, 3.8),
    (100.2, 0.0, 1.0, 0.0, 0.8),
], ids=["no-grid", "to-the-next-tick", "on-a-tick-already", "offset-grid", "offset-grid-past-the-offset",
        "no-delay"])
def test_on_tick(now: float, delay: float, tick: float, offset: float, wait: float) -> None:
    assert on_tick(now, delay, tick, offset) == pytest.approx(wait)


def test_on_tick_groups_wakes_and_delays_none_by_a_tick_or_more() -> None:
    """250 agents' waits of 9-11 s (a 10 s period +/- 10%) from moments spread over a second end on
    at most 4 moments of a 1 s grid, none of them a whole tick late."""
    rng = random.Random(7)
    wakes = set()
    for _ in range(250):
        now, delay = 50 + rng.random(), 9 + 2 * rng.random()
        wait = on_tick(now, delay, 1.0, 0.25)
        assert delay <= wait < delay + 1.0
        wakes.add(round(now + wait, 6))
    assert len(wakes) <= 4

"""End to end on a network-namespace lab: 1 control-plane host (3 store members, api-servers,
controllers, scheduler) and 2 workers (containerd, node agent, proxy), all real processes.

The tests share one lab and run in file order; the destructive ones (store leader killed,
worker failure) come last. Pods tolerate a lost node for 4 s (the api-server's default
toleration seconds) and nodes are lost after 8 s without a heartbeat (renewed every 2 s).
All service and pod traffic is sent from inside the lab's namespaces (hosts via nsenter, pods
via exec, or nsenter while the api-server is cut off); only the api-servers are reached from
here, through the lab's uplink.

With SKIFF_E2E_VM=1 (`make vm-e2e`, docs/vm.md) the workers are QEMU guests instead, real
separate kernels on the lab LAN (n1's proxy in IPVS mode, n2's in iptables mode): the seed is
examples/web applied unchanged, traffic from a worker host runs inside its guest, every wait is
SLOW times longer (emulated Python), and the tests that kill or restart a worker's processes
by PID from here are skipped (a guest's processes are not this machine's).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from deploy import netplan
from deploy.lab import VM_INSTALLED, VM_PROXY_MODES, Lab, LabSpec
from deploy.vm.image import ROOT
from skiff import defaults, images, kinds, manifests, retry, taints
from skiff.client import Client, open_channel
from skiff.retry import retry_on_conflict
from skiffpb.api.v1 import types_pb2 as t
from skiffpb.etcd import rpc_pb2 as etcd
from skiffpb.etcd import rpc_pb2_grpc as etcd_grpc
from tests.support import labs
from tests.support.prereq import require

pytestmark = [pytest.mark.e2e]

T = TypeVar("T")
LAB: Lab | None = None  # for tests/e2e/conftest.py: daemon logs in failure reports
WEB1 = "skiff/web:1.0"
WEB2 = "skiff/web:2.0"
VM = os.environ.get("SKIFF_E2E_VM") == "1"
SLOW = 8.0 if VM else 1.0  # every wait's factor: emulated Python is 10-20 times slower
# An exec into a guest's pod (runc exec under emulation) takes seconds, more on a loaded machine:
# the client's 10 s deadline is too short there.
EXEC_TIMEOUT = 60 if VM else 0
not_in_vm = pytest.mark.skipif(VM, reason="kills or restarts a worker's processes by PID: not a guest's")
if VM:  # the first test also waits for the guests to boot and start their daemons (minutes)
    pytestmark.append(pytest.mark.timeout(1500))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Lab]:
    prefix = f"e{os.getpid() % 10000}"
    # In the Vagrant VMs (SKIFF_E2E_PROXY_MODE=ipvs) the same lab runs with IPVS for real.
    if VM:
        from deploy.vm import image

        require(shutil.which("qemu-system-x86_64") is not None, "missing qemu-system-x86_64 (qemu-system-x86)")
        image.build()
    spec = LabSpec(prefix=prefix, workers=2, lan_cidr=netplan.free_lan(range(150, 200)),
                   node_monitor_grace_period="60s" if VM else "8s", node_lease_period="10s" if VM else "2s",
                   default_toleration_seconds=300 if VM else 4, min_sync_period="0s",
                   proxy_mode=os.environ.get("SKIFF_E2E_PROXY_MODE", "iptables"),
                   vm_workers=VM, proxy_modes=dict(VM_PROXY_MODES) if VM else {}, vm_timeout=3600,
                   vm_installed=list(VM_INSTALLED) if VM else [])
    with labs.running(spec, tmp_path_factory, request.module) as the_lab:
        yield the_lab


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def eventually(check: Callable[[], Awaitable[T | None]], *, timeout: float, what: str,
                     interval: float = 0.5) -> T:
    return await retry.eventually(check, timeout=timeout * SLOW, what=what, interval=interval)


def deployment(name: str, *, replicas: int, image: str = WEB1, drain: int = 0, grace: int = 30,
               surge: int | None = None, unavailable: int | None = None) -> t.Deployment:
    d = kinds.new(kinds.by_kind("Deployment"), name, "default")  # type: ignore[arg-type]
    assert isinstance(d, t.Deployment)
    d.spec.replicas = replicas
    d.spec.selector.match_labels["app"] = name
    d.spec.template.metadata.labels["app"] = name
    d.spec.template.spec.termination_grace_period_seconds = grace
    c = d.spec.template.spec.containers.add(name="web", image=image, image_pull_policy="IfNotPresent")
    c.ports.add(container_port=80)
    if drain:
        c.env.add(name="DRAIN_SECONDS", value=str(drain))
    c.readiness_probe.http_get.path = "/"
    c.readiness_probe.http_get.port.int_val = 80
    c.readiness_probe.period_seconds = 1
    if surge is not None:
        d.spec.strategy.rolling_update.max_surge.int_val = surge
    if unavailable is not None:
        d.spec.strategy.rolling_update.max_unavailable.int_val = unavailable
    return d


def service(name: str, *, app: str = "", node_port: bool = False) -> t.Service:
    s = kinds.new(kinds.by_kind("Service"), name, "default")  # type: ignore[arg-type]
    assert isinstance(s, t.Service)
    s.spec.selector["app"] = app or name
    s.spec.ports.add(protocol="TCP", port=80).target_port.int_val = 80
    if node_port:
        s.spec.type = "NodePort"
    return s


def ready(pod: t.Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)


async def app_pods(client: Client, app: str) -> list[t.Pod]:
    pods = (await client.list(t.Pod, namespace="default", label_selector=f"app={app}")).items
    return [p for p in pods if not p.metadata.HasField("deletion_timestamp")]


async def wait_ready_pods(client: Client, app: str, count: int, *, timeout: float = 90,
                          image: str = "") -> list[t.Pod]:
    async def check() -> list[t.Pod]:
        pods = await app_pods(client, app)
        good = [p for p in pods if ready(p) and (not image or p.spec.containers[0].image == image)]
        if len(good) == count and len(pods) == count:
            return good
        # Raised, so a timeout names each pod's state (a bare "None" once hid an ErrImagePull).
        raise AssertionError(f"{len(good)} of {len(pods)} pods good: " + "; ".join(map(pod_state, pods)))

    return await eventually(check, timeout=timeout, what=f"{count} Ready pods of app={app}")


def pod_state(pod: t.Pod) -> str:
    """`name@node image phase Ready=... reason`: what a failed wait reports of each pod."""
    waiting = [f"{c.state.waiting.reason}: {c.state.waiting.message[:120]}"
               for c in pod.status.container_statuses if c.state.HasField("waiting")]
    return (f"{pod.metadata.name}@{pod.spec.node_name or '-'} {pod.spec.containers[0].image} {pod.status.phase} "
            f"Ready={ready(pod)}" + "".join(f" {w}" for w in waiting))


async def endpoint_ips(client: Client, name: str) -> set[str]:
    ep = await client.get(t.Endpoints, name, "default")
    return {a.ip for s in ep.subsets for a in s.addresses}


def answers(lab: Lab, host: str, url: str, times: int) -> set[str]:
    return {lab.http_get(host, url).strip() for _ in range(times)}


def test_seed_flow(lab: Lab) -> None:
    async def scenario() -> None:
        async with lab.client() as client:
            if VM:  # the seed manifests, applied unchanged
                for item in manifests.load([str(ROOT / "examples" / "web")]):
                    await client.create(item.obj)
                svc = await client.get(t.Service, "web-service", "default")
            else:
                await client.create(deployment("web", replicas=2))
                svc = await client.create(service("web"))
            pods = await wait_ready_pods(client, "web", 2)
            rs = (await client.list(t.ReplicaSet, namespace="default", label_selector="app=web")).items
            assert len(rs) == 1 and rs[0].metadata.owner_references[0].name == "web"
            assert all(p.metadata.owner_references[0].name == rs[0].metadata.name for p in pods)
            assert sorted(p.spec.node_name for p in pods) == ["n1", "n2"], "pods should spread over both workers"
            want = {p.status.pod_ip for p in pods}
            await eventually(lambda: _equal(endpoint_ips(client, svc.metadata.name), want), timeout=30,
                             what="endpoints")
            names = {f"hello from {p.metadata.name}" for p in pods}
            url = f"http://{svc.spec.cluster_ip}/"
            for host in ("cp", "n1", "n2"):
                if VM:  # a guest's proxy (emulated Python) programs a new Service seconds after its endpoints
                    await eventually(lambda host=host: _async(answers(lab, host, url, 30) == names), timeout=30,
                                     what=f"ClusterIP from host {host}")
                else:
                    assert answers(lab, host, url, 30) == names, f"ClusterIP from host {host}"
            # From inside a pod (its own endpoint included: hairpin).
            seen = set()
            for _ in range(16):
                result = await client.exec("default", pods[0].metadata.name, ["wget", "-qO-", url],
                                               timeout_seconds=EXEC_TIMEOUT)
                assert result.exit_code == 0, result.stderr
                seen.add(result.stdout.decode().strip())
            assert seen == names

    run(scenario())


async def _equal(got: Awaitable[set[str]], want: set[str]) -> bool:
    return (await got) == want


# Only the VM lab installs a worker the Vagrant/bare-metal way (systemd in a guest); in the
# netns lab the test does not exist, rather than being skipped (CI allows no skips).
if VM:
    @pytest.mark.parametrize("host", VM_INSTALLED)
    def test_vm_worker_provisioned_by_install_under_systemd(lab: Lab, host: str) -> None:
        """The Vagrant/bare-metal path on a real kernel: systemd is PID 1, the units deploy.install
        wrote are enabled and active, and the node's certificate is the one its CSR got signed."""
        guest = lab.guest(host)
        assert guest is not None and lab.installed(host)
        units = [f"skiff-{d}.service" for d in ("containerd", "nodeagent", "netproxy", "clusterdns")]
        ready = guest.ready()
        assert ready["units"] == {u: {"is-enabled": "enabled", "is-active": "active"} for u in units}
        assert lab.run_in(host, ["cat", "/proc/1/comm"], check=True).stdout.strip() == "systemd"
        # Asked again now (through the share), after the seed's pods started there.
        active = lab.run_in(host, ["systemctl", "is-active", *units], timeout=60)
        assert active.stdout.split() == ["active"] * len(units), active.stdout + active.stderr
        enabled = lab.run_in(host, ["systemctl", "is-enabled", *units], timeout=60)
        assert enabled.stdout.split() == ["enabled"] * len(units), enabled.stdout + enabled.stderr
        # The node certificate: no pre-made one (the lab issued none for this host), the CSR's.
        assert not (lab.pki_dir / "nodes" / f"{host}.crt").exists()
        cert = lab.run_in(host, ["cat", f"/etc/skiff/pki/nodes/{host}.crt"], check=True).stdout

        async def scenario() -> None:
            async with lab.client() as client:
                node = await client.get(t.Node, host)
                assert taints.takes_new_pods(node), f"node {host} is not Ready"
                csrs = [c for c in (await client.list(t.CertificateSigningRequest)).items
                        if c.spec.username.startswith("system:bootstrap:")]
                issued = [c for c in csrs if c.status.certificate.decode().strip() == cert.strip()]
                assert len(issued) == 1, f"no CSR issued {host}'s certificate ({len(csrs)} bootstrap CSRs)"
                assert any(c.type == "Approved" and c.status == "True" for c in issued[0].status.conditions)

        run(scenario())


def test_pod_to_pod_across_hosts_and_node_port(lab: Lab) -> None:
    async def scenario() -> None:
        async with lab.client() as client:
            pods = {p.spec.node_name: p for p in await wait_ready_pods(client, "web", 2)}
            result = await client.exec("default", pods["n1"].metadata.name,
                                       ["wget", "-qO-", f"http://{pods['n2'].status.pod_ip}/"],
                                       timeout_seconds=EXEC_TIMEOUT)
            assert result.stdout.decode().strip() == f"hello from {pods['n2'].metadata.name}"
            svc = await client.create(service("web-np", app="web", node_port=True))
            node_port = svc.spec.ports[0].node_port
            assert defaults.NODE_PORT_MIN <= node_port <= defaults.NODE_PORT_MAX
            names = {f"hello from {p.metadata.name}" for p in pods.values()}
            # From the control-plane host to each worker's address.
            for worker in ("n1", "n2"):
                url = f"http://{lab.net.host(worker).ip}:{node_port}/"
                got = await eventually(lambda url=url: _async(answers(lab, "cp", url, 20)), timeout=20,
                                       what=f"NodePort on {worker}")
                assert got == names

    run(scenario())


async def _async(value: T) -> T:
    return value


def test_network_policy_between_real_containers(lab: Lab) -> None:
    """A NetworkPolicy enforced by both workers' netproxy on real containers across hosts:
    deny ingress to web, then allow it from web pods only on port 80, then delete it; the
    node agent's readiness probes (from the node) keep passing throughout."""
    from skiff.convert import from_data

    def policy(spec: dict[str, Any]) -> t.NetworkPolicy:
        return from_data({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                          "metadata": {"name": "web-policy", "namespace": "default"}, "spec": spec}, t.NetworkPolicy)

    async def scenario() -> None:
        async with lab.client() as client:
            pods = {p.spec.node_name: p for p in await wait_ready_pods(client, "web", 2)}
            src, dst = pods["n1"], pods["n2"]
            url = f"http://{dst.status.pod_ip}/"

            async def reaches() -> bool:
                # busybox timeout, not wget -T (which segfaults in busybox 1.35)
                r = await client.exec("default", src.metadata.name, ["timeout", "3", "wget", "-qO-", url],
                                        timeout_seconds=EXEC_TIMEOUT)
                return r.exit_code == 0 and r.stdout.decode().strip() == f"hello from {dst.metadata.name}"

            async def host_reaches() -> bool:
                out = await asyncio.to_thread(lab.run_in, "cp", [images.BUSYBOX, "timeout", "3", images.BUSYBOX,
                                                                "wget", "-qO-", url])
                return out.returncode == 0

            assert await reaches()
            deny = await client.create(policy({"podSelector": {"matchLabels": {"app": "web"}}}))
            await eventually(lambda: _async_not(reaches()), timeout=20 * SLOW, what="ingress denied across hosts")
            await asyncio.sleep(3)  # several probe periods: the node's own probes are never filtered
            assert len(await wait_ready_pods(client, "web", 2, timeout=5)) == 2
            deny.spec.ingress.add().from_.add().pod_selector.match_labels["app"] = "web"
            deny.spec.ingress[0].ports.add(protocol="TCP").port.int_val = 80
            await client.update(deny)
            await eventually(reaches, timeout=20 * SLOW, what="ingress allowed from a web pod")
            assert not await host_reaches(), "the control-plane host is no web pod: still denied"
            await client.delete(t.NetworkPolicy, "web-policy", "default")
            await eventually(host_reaches, timeout=20 * SLOW, what="the policy's deletion restoring traffic")

    run(scenario())


async def _async_not(value: Awaitable[bool]) -> bool | None:
    return True if not await value else None


def test_scale_up_and_down(lab: Lab) -> None:
    async def scale(client: Client, replicas: int) -> None:
        async def attempt() -> None:  # the deployment controller writes the status meanwhile
            d = await client.get(t.Deployment, "web", "default")
            d.spec.replicas = replicas
            await client.update(d)

        await retry_on_conflict(attempt)

    async def scenario() -> None:
        async with lab.client() as client:
            await scale(client, 6)
            pods = await wait_ready_pods(client, "web", 6)
            assert {p.spec.node_name for p in pods} == {"n1", "n2"}
            name = "web-service" if VM else "web"
            await eventually(lambda: _count(endpoint_ips(client, name), 6), timeout=30, what="6 endpoints")
            await scale(client, 2)
            await wait_ready_pods(client, "web", 2)
            await eventually(lambda: _count(endpoint_ips(client, name), 2), timeout=30, what="2 endpoints")

    run(scenario())


async def _count(got: Awaitable[set[str]], n: int) -> bool:
    return len(await got) == n


CLIENT_LOOP = (
    'while true; do '
    'if printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 2 "$TARGET" 80 | grep -q "hello from"; '
    'then echo ok; else echo FAIL; fi; sleep 0.1; done'
)


def test_rolling_update_without_failed_requests(lab: Lab) -> None:
    async def scenario() -> None:
        async with lab.client() as client:
            # A pod keeps serving `drain` seconds after TERM, the time every proxy has to drop it; a
            # guest's proxy (emulated Python) takes longer than 3 s (one failed request in 237 s).
            drain = 15 if VM else 3
            await client.create(deployment("roll", replicas=3, drain=drain, grace=drain + 10, surge=1, unavailable=0))
            svc = await client.create(service("roll"))
            await wait_ready_pods(client, "roll", 3)
            probe = kinds.new(kinds.by_kind("Pod"), "roll-client", "default")  # type: ignore[arg-type]
            assert isinstance(probe, t.Pod)
            c = probe.spec.containers.add(name="client", image=WEB1, command=["/bin/sh", "-c", CLIENT_LOOP])
            c.env.add(name="TARGET", value=svc.spec.cluster_ip)
            await client.create(probe)

            async def log_lines() -> list[str]:
                data = b"".join([chunk async for chunk in client.logs("default", "roll-client")])
                return data.decode().split()

            await eventually(lambda: _at_least(log_lines(), 20), timeout=60, what="client requests flowing")
            d = await client.get(t.Deployment, "roll", "default")
            d.spec.template.spec.containers[0].image = WEB2
            await client.update(d)
            await wait_ready_pods(client, "roll", 3, image=WEB2, timeout=120)
            await asyncio.sleep(3)
            lines = await log_lines()
            assert lines.count("ok") > 50
            assert lines.count("FAIL") == 0, f"{lines.count('FAIL')} failed requests during the rollout"
            if VM:  # n1's proxy may still be dropping the old pods
                await eventually(lambda: _async("v2" in lab.http_get("n1", f"http://{svc.spec.cluster_ip}/")),
                                 timeout=20, what="v2 answering on n1")
            else:
                assert "v2" in lab.http_get("n1", f"http://{svc.spec.cluster_ip}/")

    run(scenario())


async def _at_least(lines: Awaitable[list[str]], n: int) -> bool:
    return len([x for x in await lines if x == "ok"]) >= n


@not_in_vm
def test_netproxy_restart_keeps_new_connections_working(lab: Lab) -> None:
    async def scenario() -> None:
        async with lab.client() as client:
            svc = await client.get(t.Service, "web", "default")
            url = f"http://{svc.spec.cluster_ip}/"
            daemon = lab.daemons("n1")["netproxy"]
            from deploy import procs

            procs.stop(daemon)
            assert len(answers(lab, "n1", url, 10)) >= 1  # rules stay while the proxy is down
            lab.start_daemon("n1", "netproxy")
            pods = await wait_ready_pods(client, "web", 2)
            names = {f"hello from {p.metadata.name}" for p in pods}
            for _ in range(5):
                assert answers(lab, "n1", url, 20) == names
                await asyncio.sleep(0.5)

    run(scenario())


async def store_status(lab: Lab, *, skip: str = "") -> tuple[dict[int, str], set[int]]:
    """Asked of every member but `skip`: member id -> name, and the leader ids they report."""
    ids: dict[int, str] = {}
    leaders: set[int] = set()
    for m in lab.cluster.members:
        if m.name == skip:
            continue
        async with open_channel(m.client_url, lab.admin) as ch:  # the store's client port is mutual TLS
            st = await etcd_grpc.MaintenanceStub(ch).Status(etcd.StatusRequest(), timeout=5)
            ids[st.header.member_id] = m.name
            leaders.add(st.leader)
    return ids, leaders


async def store_leader(lab: Lab) -> tuple[str, dict[int, str]]:
    """The name of the member every member agrees leads, and every member's id."""
    ids, leaders = await store_status(lab)
    assert len(leaders) == 1 and 0 not in leaders, f"members disagree on the leader: {leaders}"
    return ids[leaders.pop()], ids


PARTITION_SECONDS = 35.0  # well past grace (8 s) + toleration (4 s) + a few monitor passes (5 s)


def cut(lab: Lab, worker: str, address: str, *, on: bool) -> subprocess.CompletedProcess[str]:
    """Drop (or stop dropping) everything between `worker` and `address`, inside the worker's netns."""
    op = "-I" if on else "-D"
    out = None
    for chain, side in (("INPUT", "-s"), ("OUTPUT", "-d")):
        out = lab.run_in(worker, ["iptables", "-w", op, chain, side, address, "-j", "DROP"], check=on)
    assert out is not None
    return out


def container_pid(lab: Lab, host: str, pod: t.Pod) -> int:
    """The host pid of the pod's first container, asked of the host's containerd (not the api-server)."""
    cid = pod.status.container_statuses[0].container_id.split("://", 1)[-1]
    sock = str(lab.host_config(host).node_paths.socket)
    out = subprocess.run(["ctr", "-a", sock, "-n", "k8s.io", "task", "ls"], capture_output=True, text=True,
                         check=True, timeout=20).stdout
    for line in out.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == cid:
            return int(fields[1])
    raise AssertionError(f"no task {cid} of pod {pod.metadata.name} on {host}:\n{out}")


def pod_get(lab: Lab, host: str, pod: t.Pod, url: str) -> str:
    """GET `url` from inside `pod`'s network namespace: pod-to-pod traffic that needs no api-server
    (exec goes through it, and the api-server is what is cut off)."""
    argv = ["nsenter", f"--net=/proc/{container_pid(lab, host, pod)}/ns/net", "--", images.BUSYBOX, "wget", "-qO-",
            url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, f"GET {url} from pod {pod.metadata.name} failed: {out.stderr.strip()}"
    return out.stdout.strip()


def containers(pods: list[t.Pod]) -> dict[str, tuple[str, str, str, int]]:
    return {p.metadata.uid: (p.metadata.name, p.spec.node_name, p.status.container_statuses[0].container_id,
                             p.status.container_statuses[0].restart_count) for p in pods}


@not_in_vm
def test_partition_of_every_worker_evicts_nothing_and_restarts_nothing(lab: Lab) -> None:
    """Every worker cut off from the control plane for longer than grace + toleration: 2 of 3 nodes
    unhealthy is a disruption, so no pod is deleted; traffic between the workers goes on; after
    the cut heals the same containers run, never restarted."""
    async def scenario() -> None:
        async with lab.client() as client:
            await client.create(deployment("steady", replicas=4))
            svc = await client.create(service("steady"))
            pods = await wait_ready_pods(client, "steady", 4)
            on: dict[str, list[t.Pod]] = {}
            for p in pods:
                on.setdefault(p.spec.node_name, []).append(p)
            assert set(on) == {"n1", "n2"}, f"4 replicas should spread over both workers: {sorted(on)}"
            names = {f"hello from {p.metadata.name}" for p in pods}
            url = f"http://{svc.spec.cluster_ip}/"
            for w in ("n1", "n2"):
                await eventually(lambda w=w: _async(answers(lab, w, url, 20) == names), timeout=30,
                                 what=f"the ClusterIP from {w} reaching all 4 pods")
            before = containers(pods)
            cp_ip = lab.net.host("cp").ip
            started = time.monotonic()
            try:
                for w in ("n1", "n2"):
                    cut(lab, w, cp_ip, on=True)

                async def both_lost() -> bool:
                    nodes = [await client.get(t.Node, w) for w in ("n1", "n2")]
                    return all(any(c.type == "Ready" and c.status == "Unknown" for c in n.status.conditions)
                               for n in nodes)

                await eventually(both_lost, timeout=40, what="n1 and n2 Ready=Unknown")
                checks = 0
                while time.monotonic() - started < PARTITION_SECONDS or checks < 3:
                    for w, other in (("n1", "n2"), ("n2", "n1")):
                        target = on[other][0]
                        got = pod_get(lab, w, on[w][0], f"http://{target.status.pod_ip}/")
                        assert got == f"hello from {target.metadata.name}", f"pod on {w} -> pod on {other}"
                        got_set = answers(lab, w, url, 8)
                        assert got_set and got_set <= names, f"ClusterIP from {w}: {got_set}"
                    checks += 1
                    await asyncio.sleep(2)
                during = (await client.list(t.Pod, namespace="default", label_selector="app=steady")).items
                assert {p.metadata.uid for p in during} == set(before), "no pod deleted or replaced"
                assert not any(p.metadata.HasField("deletion_timestamp") for p in during)
                for w in ("n1", "n2"):
                    n = await client.get(t.Node, w)
                    assert not any(tn.effect == taints.NO_EXECUTE for tn in n.spec.taints), \
                        f"{w} tainted NoExecute during a disruption: {n.spec.taints}"
                events = (await client.list(t.Event)).items
                stopped = {e.involved_object.name for e in events if e.reason == "NodeEvictionsStopped"}
                assert {"n1", "n2"} <= stopped, f"events saying evictions stopped: {sorted(stopped)}"
            finally:
                for w in ("n1", "n2"):
                    cut(lab, w, cp_ip, on=False)

            async def healed() -> bool:
                nodes = [await client.get(t.Node, w) for w in ("n1", "n2")]
                return all(taints.takes_new_pods(n) for n in nodes)

            await eventually(healed, timeout=60, what="n1 and n2 Ready and untainted after the cut")
            pods = await wait_ready_pods(client, "steady", 4, timeout=60)
            assert containers(pods) == before, "the same containers, never restarted"
            want = {p.status.pod_ip for p in pods}
            await eventually(lambda: _equal(endpoint_ips(client, "steady"), want), timeout=30,
                             what="all 4 pods back in the endpoints")
            await client.delete(t.Service, "steady", "default")
            await client.delete(t.Deployment, "steady", "default")

    run(scenario())


@not_in_vm
def test_store_leader_killed_cluster_keeps_working(lab: Lab) -> None:
    async def scenario() -> None:
        leader, member_names = await store_leader(lab)
        member = next(m for m in lab.cluster.members if m.name == leader)
        lab.kill_daemon(member.host, f"store-{leader}")
        async with Client([m.api_url for m in lab.cluster.members if m.name != leader],
                          credentials=lab.admin) as client:
            d = await client.get(t.Deployment, "web", "default")
            d.spec.replicas = 3
            await client.update(d)
            pods = await wait_ready_pods(client, "web", 3)
            svc = await client.create(service("after-failover", app="web"))
            want = {p.status.pod_ip for p in pods}
            await eventually(lambda: _equal(endpoint_ips(client, "after-failover"), want), timeout=30,
                             what="endpoints of a Service created after the failover")
            url = f"http://{svc.spec.cluster_ip}/"
            names = {f"hello from {p.metadata.name}" for p in pods}
            await eventually(lambda: _async(answers(lab, "cp", url, 30) == names), timeout=20,
                             what="the new ClusterIP answers")
            # The survivors agree on a leader; a cluster that never elected one would name the dead one.
            new_leader = await eventually(lambda: _agreed_leader(lab, leader, member_names), timeout=10,
                                          what="survivors agreeing on a leader")
            assert new_leader != leader and new_leader in member_names.values()
        lab.start_daemon(member.host, f"store-{leader}")

    run(scenario())


async def _agreed_leader(lab: Lab, dead: str, names: dict[int, str]) -> str | None:
    """The leader the surviving members agree on, by name (the dead one's name included)."""
    _, leaders = await store_status(lab, skip=dead)
    return names.get(leaders.pop()) if len(leaders) == 1 and 0 not in leaders else None


@not_in_vm
def test_rolling_update_while_a_worker_fails(lab: Lab) -> None:
    """A rolling update starts and n2's node agent and containerd are killed -9 at once: the
    rollout still completes, on n1 (n2's pods are evicted after grace + toleration and replaced),
    and a client on n1 sees no failed request through the ClusterIP (n2's containers keep
    serving until the endpoints drop them). n2 comes back afterwards, for the tests after this."""
    async def scenario() -> None:
        async with lab.client() as client:
            await client.create(deployment("rollfail", replicas=4, drain=3, grace=13, surge=1, unavailable=0))
            svc = await client.create(service("rollfail"))
            pods = await wait_ready_pods(client, "rollfail", 4)
            assert {p.spec.node_name for p in pods} == {"n1", "n2"}, "the replicas should spread over both"
            probe = kinds.new(kinds.by_kind("Pod"), "rollfail-client", "default")  # type: ignore[arg-type]
            assert isinstance(probe, t.Pod)
            probe.spec.node_name = "n1"
            c = probe.spec.containers.add(name="client", image=WEB1, command=["/bin/sh", "-c", CLIENT_LOOP])
            c.env.add(name="TARGET", value=svc.spec.cluster_ip)
            await client.create(probe)

            async def log_lines() -> list[str]:
                data = b"".join([chunk async for chunk in client.logs("default", "rollfail-client")])
                return data.decode().split()

            await eventually(lambda: _at_least(log_lines(), 20), timeout=60, what="client requests flowing")
            d = await client.get(t.Deployment, "rollfail", "default")
            d.spec.template.spec.containers[0].image = WEB2
            await client.update(d)
            lab.stop_worker("n2", kill=True)
            try:
                async def rolled_out_on_n1() -> list[t.Pod] | None:
                    pods = await app_pods(client, "rollfail")
                    good = [p for p in pods if ready(p) and p.spec.containers[0].image == WEB2
                            and p.spec.node_name == "n1"]
                    return good if len(good) == 4 else None

                await eventually(rolled_out_on_n1, timeout=150, what="4 Ready v2 pods on n1")
                async def updated() -> bool:
                    dep = await client.get(t.Deployment, "rollfail", "default")
                    return dep.status.updated_replicas == 4

                await eventually(updated, timeout=30, what="the Deployment's status counting 4 updated replicas")
                lines = await log_lines()
                assert lines.count("ok") > 100
                assert lines.count("FAIL") == 0, f"{lines.count('FAIL')} failed requests while n2 failed"
            finally:
                lab.start_worker("n2")
            await lab.wait_nodes_ready(["n2"], 90)
            await client.delete(t.Pod, "rollfail-client", "default", grace_period_seconds=0)
            await client.delete(t.Service, "rollfail", "default")
            await client.delete(t.Deployment, "rollfail", "default")

    run(scenario())


@not_in_vm
def test_worker_failure_moves_pods_and_endpoints(lab: Lab) -> None:
    async def scenario() -> None:
        async with lab.client() as client:
            d = await client.get(t.Deployment, "web", "default")
            d.spec.replicas = 2
            await client.update(d)
            await wait_ready_pods(client, "web", 2)
            lab.stop_worker("n2", kill=True)

            async def not_ready() -> bool:
                node = await client.get(t.Node, "n2")
                return any(c.type == "Ready" and c.status != "True" for c in node.status.conditions)

            await eventually(not_ready, timeout=40, what="n2 NotReady")

            async def moved() -> list[t.Pod] | None:
                pods = await app_pods(client, "web")
                good = [p for p in pods if ready(p) and p.spec.node_name == "n1"]
                return good if len(good) == 2 and len(pods) == 2 else None

            pods = await eventually(moved, timeout=60, what="pods recreated on n1")
            want = {p.status.pod_ip for p in pods}
            await eventually(lambda: _equal(endpoint_ips(client, "web"), want), timeout=30, what="endpoints on n1")
            url = f"http://{(await client.get(t.Service, 'web', 'default')).spec.cluster_ip}/"
            assert answers(lab, "cp", url, 20) == {f"hello from {p.metadata.name}" for p in pods}

    run(scenario())

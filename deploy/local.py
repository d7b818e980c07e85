"""`make up` / `make down`: the embedded default, a one-host Skiff cluster on this machine.

The host is a network namespace (`skiff-node`) running every component: a store member, the
api-server, controllers, scheduler, containerd, the node agent and the network proxy. The root
namespace reaches it through the `skiff-up` veth, with routes for the service and pod CIDRs,
so `curl <ClusterIP>` from this machine's shell reaches the pods, and the iptables rules stay
inside the node's namespace. `up` applies examples/web/ (the seed's 2-replica Deployment and
ClusterIP Service with Skiff's offline web image), waits until the pods are Ready, and shows
the result and one request through the ClusterIP. State lives under one directory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from deploy import netplan
from deploy.lab import Lab, LabError, LabSpec
from skiff import conditions, defaults, kubeconfig
from skiff import config as skiff_config
from skiffpb.api.v1 import types_pb2 as t

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "web"
PREFIX = "skiff"
HOST = "node"


def say(text: str) -> None:
    print(f"==> {text}", flush=True)


def skiff_cli(*args: str, lab: Lab) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SKIFF_CONFIG=str(lab.config_path))
    return subprocess.run([sys.executable, "-m", "skiff.cli.main", *args], capture_output=True, text=True,
                          env=env, check=False)


async def wait_web_ready(lab: Lab, *, replicas: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    async with lab.client() as client:
        while True:
            pods = [p for p in (await client.list(t.Pod, namespace="default", label_selector="app=web")).items
                    if not p.metadata.HasField("deletion_timestamp")]
            ready = [p for p in pods if conditions.is_pod_ready(p)]
            line = f"pods Ready: {len(ready)}/{replicas} ({', '.join(p.status.phase or 'Pending' for p in pods)})"
            if line != last:
                say(line)
                last = line
            if len(ready) >= replicas:
                return
            if time.monotonic() > deadline:
                raise LabError(f"web pods not Ready after {timeout:.0f}s; see `skiff describe pods` and "
                               f"{lab.dir}/{HOST}/run/*.log")
            await asyncio.sleep(1)


async def service_ip(lab: Lab) -> str:
    async with lab.client() as client:
        svc = await client.get(t.Service, "web-service", "default")
        return svc.spec.cluster_ip


async def get_by_name(lab: Lab, url: str) -> str:
    """GET `url` from inside one of the web pods (through its resolv.conf: the cluster DNS)."""
    async with lab.client() as client:
        pods = (await client.list(t.Pod, namespace="default", label_selector="app=web")).items
        result = await client.exec("default", pods[0].metadata.name, ["wget", "-qO-", url])
        if result.exit_code != 0:
            raise LabError(f"GET {url} from pod {pods[0].metadata.name} failed: {result.stderr.decode().strip()}")
        return f"{pods[0].metadata.name}: {result.stdout.decode().strip()}"


def up(state_dir: Path) -> int:
    spec = LabSpec(prefix=PREFIX, combined=True, lan_cidr=defaults.LOCAL_LAN_CIDR, host_routes=True, store_members=1,
                   min_sync_period="0s")
    lab = Lab(spec, state_dir)
    if (lab.dir / "lab.json").exists():
        say(f"a local cluster already exists under {lab.dir}; reusing it (`make down` removes it)")
        lab = Lab.load(PREFIX, state_dir)
    else:
        say(f"starting a one-host cluster in network namespace {lab.netns(HOST)} (state in {lab.dir})")
        lab.up(progress=say, timeout=180)
    server = ",".join(lab.api_servers)
    path = skiff_config.write_config(server, credentials=lab.admin)
    say(f"CLI configured: {path} points at {server} as the admin ({lab.admin.cert_file})")
    kube_path = lab.write_kubeconfig()
    say(f"kubectl configured: context {kubeconfig.CONTEXT} in {kube_path} ({lab.http_servers[0]}); "
        f"try .venv/bin/kubectl get pods")
    applied = skiff_cli("apply", "-f", str(EXAMPLE), lab=lab)
    print(applied.stdout, end="")
    if applied.returncode != 0:
        print(applied.stderr, end="", file=sys.stderr)
        return 1
    asyncio.run(wait_web_ready(lab, replicas=2, timeout=180))
    shown = skiff_cli("get", "pods,svc,ep", "-o", "wide", lab=lab)
    print(shown.stdout, end="")
    cluster_ip = asyncio.run(service_ip(lab))
    say(f"GET http://{cluster_ip}/ from inside {lab.netns(HOST)}:")
    for _ in range(2):
        print("    " + lab.http_get(HOST, f"http://{cluster_ip}/").strip())
    say("GET http://web-service/ from inside a pod (the cluster DNS resolves the Service's name):")
    print("    " + asyncio.run(get_by_name(lab, "http://web-service/")))
    if netplan.route_device(cluster_ip) == lab.net.uplink_name:
        say(f"from this shell too: curl http://{cluster_ip}/  (routed through {lab.net.uplink_name})")
    say("done. Try: .venv/bin/skiff get pods -o wide; .venv/bin/skiff scale deploy/web --replicas 4; make down")
    return 0


def down(state_dir: Path) -> int:
    try:
        lab = Lab.load(PREFIX, state_dir)
    except LabError:
        say("no local cluster is running")
        return 0
    notes = lab.down(progress=say)
    for note in notes:
        say(f"cleaned: {note}")
    path = skiff_config.config_path()
    if path.exists() and lab.api_servers[0] in path.read_text():
        path.unlink()
    if kubeconfig.remove_entry(lab.http_servers[0]):
        say(f"removed context {kubeconfig.CONTEXT} from {kubeconfig.kubeconfig_path()}")
    return 0


def status(state_dir: Path) -> int:
    try:
        lab = Lab.load(PREFIX, state_dir)
    except LabError as exc:
        print(exc)
        return 1
    print("\n".join(lab.status()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.local", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("--state-dir", type=Path, default=Path("/var/lib/skiff/local"))
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("error: the local cluster needs root (network namespaces, containerd, iptables)", file=sys.stderr)
        return 1
    try:
        return {"up": up, "down": down, "status": status}[args.action](args.state_dir)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

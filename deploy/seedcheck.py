"""`python -m deploy.seedcheck`: apply manifests to a running cluster, wait until every
Deployment's pods are Ready, and request every ClusterIP Service from every host.

The Vagrant lab runs it with the seed manifests (examples/seed/: nginx:latest, pulled through
CRI) before the e2e suite (deploy/vagrant/run-e2e.sh); any cluster whose hosts can be reached
with a command prefix can (`--run "ssh -l root {ip}"`, `--run "nsenter --net=/run/netns/L-{name}"`).

What must hold: the manifests are applied unchanged; the check fails (exit 1) with the reason
when a pod is not Ready in time or a host gets no answer; with --delete the objects it created
are deleted again, also after a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import subprocess
import sys
import time

from google.protobuf.message import Message

from skiff import conditions, config, defaults, errors, labels, manifests
from skiff.client import ApiClient, Client
from skiffpb.api.v1 import types_pb2 as t


class CheckError(Exception):
    pass


def ready(pod: t.Pod) -> bool:
    return pod.status.phase == "Running" and conditions.is_pod_ready(pod)


def missing_ready(deployment: t.Deployment, pods: list[t.Pod]) -> int:
    """How many more Ready pods the Deployment's selector still lacks."""
    selector = labels.from_label_selector(deployment.spec.selector)
    have = sum(1 for p in pods if labels.matches(selector, p.metadata.labels) and ready(p)
               and not p.metadata.HasField("deletion_timestamp"))
    want = defaults.replicas(deployment.spec)
    return max(want - have, 0)


def service_urls(svc: t.Service) -> list[str]:
    return [f"http://{svc.spec.cluster_ip}:{p.port}/" for p in svc.spec.ports if p.protocol in ("", "TCP")]


def parse_hosts(text: str) -> list[tuple[str, str]]:
    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, sep, ip = part.partition("=")
        if not sep:
            raise CheckError(f'--hosts: expected name=ip, got "{part}"')
        out.append((name, ip))
    return out


async def apply(api: ApiClient, objs: list[manifests.Loaded]) -> list[Message]:
    created = []
    for item in objs:
        try:
            created.append(await api.create(item.obj))
            print(f"created {item.kind.kind.lower()}/{item.name}")
        except errors.AlreadyExistsError:
            print(f"{item.kind.kind.lower()}/{item.name} already exists; left as it is")
    return created


async def wait_ready(api: ApiClient, deployments: list[t.Deployment], *, timeout: float) -> list[t.Pod]:
    deadline = time.monotonic() + timeout
    while True:
        pods = (await api.list(t.Pod, namespace="")).items
        lacking = {d.metadata.name: missing_ready(d, [p for p in pods if p.metadata.namespace ==
                                                      (d.metadata.namespace or "default")]) for d in deployments}
        if not any(lacking.values()):
            return [p for p in pods if ready(p)]
        if time.monotonic() > deadline:
            detail = ", ".join(f"{n}: {k} pod(s) not Ready" for n, k in lacking.items() if k)
            raise CheckError(f"not Ready after {timeout:.0f}s: {detail}")
        await asyncio.sleep(2)


def request(run: str, name: str, ip: str, fetch: str, url: str) -> str:
    cmd = [*shlex.split(run.format(name=name, ip=ip)), *shlex.split(fetch), url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise CheckError(f"{url} from {name}: exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()[:200]}")
    return proc.stdout


async def check(args: argparse.Namespace) -> None:
    objs = manifests.load(args.manifests)
    hosts = parse_hosts(args.hosts)
    credentials = config.resolve_credentials(ca=args.certificate_authority, cert=args.client_certificate,
                                             key=args.client_key)
    async with Client(args.server, credentials=credentials) as api:
        created = await apply(api, objs)
        try:
            deployments = [o.obj for o in objs if isinstance(o.obj, t.Deployment)]
            pods = await wait_ready(api, deployments, timeout=args.timeout)  # type: ignore[arg-type]
            print("ready: " + ", ".join(f"{p.metadata.name} on {p.spec.node_name} ({p.status.pod_ip})"
                                        for p in pods))
            for o in objs:
                if not isinstance(o.obj, t.Service) or o.obj.spec.type not in ("", "ClusterIP"):
                    continue
                svc = await api.get(t.Service, o.name, o.obj.metadata.namespace)
                for url in service_urls(svc):
                    for name, ip in hosts:
                        body = request(args.run, name, ip, args.fetch, url)
                        first = body.strip().splitlines()[0][:80] if body.strip() else ""
                        print(f"{name} -> {url}: {len(body)} bytes, {first!r}")
        finally:
            if args.delete:
                for obj in reversed(created):
                    meta = obj.metadata  # type: ignore[attr-defined]
                    await api.delete(type(obj), meta.name, meta.namespace)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.seedcheck", description=__doc__.split("\n\n")[0])
    p.add_argument("--server", required=True, help="api-servers, host:port,...")
    p.add_argument("--certificate-authority", default="", help="CA file (default: the skiff config's)")
    p.add_argument("--client-certificate", default="", help="client certificate (default: the skiff config's)")
    p.add_argument("--client-key", default="", help="its key (default: the skiff config's)")
    p.add_argument("--hosts", required=True, help="name=ip,... of the hosts to send requests from")
    p.add_argument("--run", required=True, help='command prefix that runs a command on a host, with {name} and '
                   '{ip}, e.g. "ssh -l root {ip}"')
    p.add_argument("--fetch", default="curl -fsS -m 10", help="the HTTP client on the hosts (default %(default)s)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds for the pods to be Ready")
    p.add_argument("--delete", action="store_true", help="delete what was created at the end")
    p.add_argument("manifests", nargs="+", help="manifest files or directories")
    args = p.parse_args(argv)
    try:
        asyncio.run(check(args))
    except (CheckError, manifests.ManifestError, errors.SkiffError) as exc:
        print(f"seed check failed: {exc}", file=sys.stderr)
        return 1
    print("seed check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

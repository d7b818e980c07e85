"""Cluster DNS end to end on a network-namespace lab: 1 control-plane host and 2 workers, each
running its own node-local clusterdns, real containers resolving through it.

The tests share one lab and run in file order; the api-server outage comes last. Queries are
sent from inside pods (busybox nslookup/wget, through the pod's resolv.conf) and, for timing,
from a host's namespace to that host's clusterdns address; nothing leaves the lab.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar

import pytest

from deploy import netplan
from deploy.lab import Lab, LabSpec
from skiff import defaults, kinds
from skiff.client import Client
from skiff.retry import eventually
from skiffpb.api.v1 import types_pb2 as t
from tests.support import labs

pytestmark = pytest.mark.e2e

T = TypeVar("T")
LAB: Lab | None = None  # for tests/e2e/conftest.py: daemon logs in failure reports
WEB = "skiff/web:1.0"
DOMAIN = "cluster.local"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Lab]:
    prefix = f"d{os.getpid() % 10000}"
    spec = LabSpec(prefix=prefix, workers=2, lan_cidr=netplan.free_lan(range(200, 212)), min_sync_period="0s")
    with labs.running(spec, tmp_path_factory, request.module) as the_lab:
        yield the_lab


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


def web_pod(name: str, *, node: str, labels: dict[str, str], hostname: str = "", subdomain: str = "") -> t.Pod:
    p = kinds.new(kinds.by_kind("Pod"), name, "default")  # type: ignore[arg-type]
    assert isinstance(p, t.Pod)
    p.metadata.labels.update(labels)
    p.spec.node_name = node
    p.spec.hostname, p.spec.subdomain = hostname, subdomain
    c = p.spec.containers.add(name="web", image=WEB, image_pull_policy="IfNotPresent")
    c.ports.add(name="http", container_port=80)
    c.readiness_probe.http_get.path = "/"
    c.readiness_probe.http_get.port.int_val = 80
    c.readiness_probe.period_seconds = 1
    return p


def service(name: str, *, app: str, headless: bool = False) -> t.Service:
    s = kinds.new(kinds.by_kind("Service"), name, "default")  # type: ignore[arg-type]
    assert isinstance(s, t.Service)
    s.spec.selector["app"] = app
    s.spec.ports.add(name="http", protocol="TCP", port=80).target_port.int_val = 80
    if headless:
        s.spec.cluster_ip = "None"
    return s


def ready(pod: t.Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)


async def wait_ready(client: Client, names: list[str]) -> dict[str, t.Pod]:
    async def check() -> dict[str, t.Pod] | None:
        pods = {n: await client.get(t.Pod, n, "default") for n in names}
        return pods if all(ready(p) for p in pods.values()) else None

    return await eventually(check, timeout=90, what=f"pods {names} Ready")


async def sh(client: Client, pod: str, script: str) -> tuple[int, str]:
    result = await client.exec("default", pod, ["/bin/sh", "-c", script])
    return result.exit_code, (result.stdout + result.stderr).decode()


# Sent from a host's namespace to that host's clusterdns: rcode, answers and the time taken.
QUERY = """
import json, sys, time
import dns.message, dns.query, dns.rcode
name, rdtype, server = sys.argv[1:4]
q = dns.message.make_query(name, rdtype)
t0 = time.perf_counter()
r = dns.query.udp(q, server, timeout=2)
ms = (time.perf_counter() - t0) * 1000
print(json.dumps({"rcode": dns.rcode.to_text(r.rcode()), "ms": ms,
                  "answers": sorted(x.to_text() for rr in r.answer for x in rr)}))
"""


def host_query(lab: Lab, host: str, name: str, rdtype: str = "A") -> dict[str, Any]:
    out = lab.run_in(host, [sys.executable, "-c", QUERY, name, rdtype, defaults.NODE_LOCAL_DNS_IP])
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_pods_resolve_services_by_name(lab: Lab) -> None:
    async def scenario() -> None:
        async with lab.client() as client:
            await client.create(service("web-service", app="web"))
            await client.create(service("web-headless", app="web", headless=True))
            await client.create(web_pod("web-1", node="n1", labels={"app": "web"}))
            await client.create(web_pod("web-2", node="n2", labels={"app": "web"}))
            await client.create(web_pod("client", node="n1", labels={"app": "client"}))
            pods = await wait_ready(client, ["web-1", "web-2", "client"])
            svc = await client.get(t.Service, "web-service", "default")

            code, conf = await sh(client, "client", "cat /etc/resolv.conf")
            assert code == 0, conf
            assert f"nameserver {defaults.NODE_LOCAL_DNS_IP}" in conf
            assert f"search default.svc.{DOMAIN} svc.{DOMAIN} {DOMAIN}" in conf
            assert "ndots:5" in conf

            # The Service variables of the pod's namespace are in its environment.
            code, env = await sh(client, "client", "env")
            assert f"WEB_SERVICE_SERVICE_HOST={svc.spec.cluster_ip}" in env
            assert f"WEB_SERVICE_PORT=tcp://{svc.spec.cluster_ip}:80" in env
            # default/kubernetes: the api-servers' HTTPS (REST) ports, kept by the controller manager.
            master = await client.get(t.Service, "kubernetes", "default")
            assert master.spec.cluster_ip == "10.96.0.1"
            assert "KUBERNETES_SERVICE_HOST=10.96.0.1" in env and "KUBERNETES_SERVICE_PORT=443" in env
            master_eps = await client.get(t.Endpoints, "kubernetes", "default")
            assert sorted((a.ip, s.ports[0].port) for s in master_eps.subsets for a in s.addresses) == sorted(
                (m.ip, m.http_port) for m in lab.cluster.members)
            got = host_query(lab, "n1", f"kubernetes.default.svc.{DOMAIN}")
            assert got["answers"] == ["10.96.0.1"]

            names = {f"hello from {p}" for p in ("web-1", "web-2")}
            for name in ("web-service", "web-service.default", f"web-service.default.svc.{DOMAIN}"):
                # busybox nslookup applies the search list only to names without a dot (it ignores
                # ndots) and exits 1 when any search domain is NXDOMAIN: the answer line is what
                # counts. wget below resolves through libc, which follows resolv.conf exactly.
                if name != "web-service.default":
                    _, out = await sh(client, "client", f"nslookup {name}")
                    assert f"Address: {svc.spec.cluster_ip}" in out, f"nslookup {name}: {out}"

                async def by_name(name: str = name) -> set[str] | None:
                    seen = set()
                    for _ in range(12):
                        code, out = await sh(client, "client", f"wget -qO- http://{name}/")
                        assert code == 0, out
                        seen.add(out.strip())
                    return seen if seen == names else None

                await eventually(by_name, timeout=20, what=f"both pods through http://{name}/")

            # A headless Service is its ready pods' addresses, each reachable by its own name.
            ips = {p.status.pod_ip for n, p in pods.items() if n != "client"}
            await eventually(lambda: _headless_has(client, ips), timeout=30, what="headless answers")
            web2 = pods["web-2"].status.pod_ip
            code, out = await sh(client, "client", f"wget -qO- http://{web2.replace('.', '-')}.web-headless/")
            assert (code, out.strip()) == (0, "hello from web-2"), out

    async def _headless_has(client: Client, ips: set[str]) -> bool:
        _, out = await sh(client, "client", "nslookup web-headless")
        return all(f"Address: {ip}" in out for ip in ips)

    run(scenario())


def test_hostname_subdomain_srv_ptr_externalname(lab: Lab) -> None:
    async def scenario() -> None:
        async with lab.client() as client:
            await client.create(service("db", app="db", headless=True))
            db_pod = web_pod("db-pod", node="n2", labels={"app": "db"}, hostname="db-0", subdomain="db")
            db_pod.spec.host_aliases.add(ip="10.1.2.3", hostnames=["legacy.example"])
            await client.create(db_pod)
            ext = kinds.new(kinds.by_kind("Service"), "ext", "default")  # type: ignore[arg-type]
            assert isinstance(ext, t.Service)
            ext.spec.type, ext.spec.external_name = "ExternalName", f"web-service.default.svc.{DOMAIN}"
            await client.create(ext)
            db = (await wait_ready(client, ["db-pod"]))["db-pod"]

            async def db_by_hostname() -> bool:
                code, out = await sh(client, "client", "wget -qO- http://db-0.db/")
                return code == 0 and out.strip() == "hello from db-0"

            # The agent's /etc/hosts: the pod's FQDN and hostname, then the hostAliases.
            code, hosts = await sh(client, "db-pod", "cat /etc/hosts")
            assert code == 0 and f"{db.status.pod_ip}\tdb-0.db.default.svc.{DOMAIN}\tdb-0\n" in hosts, hosts
            assert "10.1.2.3\tlegacy.example\n" in hosts, hosts
            # The pod's hostname is db-0 (web answers "hello from $(hostname)").
            await eventually(db_by_hostname, timeout=30, what="db-0.db by name")
            code, out = await sh(client, "client", "wget -qO- http://ext/")
            assert code == 0 and out.strip().startswith("hello from web-"), out

        svc_ip = (await _get_svc(lab, "web-service")).spec.cluster_ip
        srv = host_query(lab, "n1", f"_http._tcp.web-service.default.svc.{DOMAIN}", "SRV")
        assert srv["answers"] == [f"0 100 80 web-service.default.svc.{DOMAIN}."]
        srv = host_query(lab, "n1", f"_http._tcp.db.default.svc.{DOMAIN}", "SRV")
        assert srv["answers"] == [f"0 100 80 db-0.db.default.svc.{DOMAIN}."]
        ptr = host_query(lab, "n1", ".".join(reversed(svc_ip.split("."))) + ".in-addr.arpa", "PTR")
        assert ptr["answers"] == [f"web-service.default.svc.{DOMAIN}."]
        pod_a = host_query(lab, "n2", f"{db.status.pod_ip.replace('.', '-')}.default.pod.{DOMAIN}")
        assert pod_a["answers"] == [db.status.pod_ip]
        cname = host_query(lab, "n2", f"ext.default.svc.{DOMAIN}")
        assert cname["answers"][0] == svc_ip or f"web-service.default.svc.{DOMAIN}." in cname["answers"]

    run(scenario())


async def _get_svc(lab: Lab, name: str) -> t.Service:
    async with lab.client() as client:
        return await client.get(t.Service, name, "default")


def test_unknown_names_fail_fast(lab: Lab) -> None:
    for host in ("n1", "n2"):
        missing = host_query(lab, host, f"nothing-here.default.svc.{DOMAIN}")
        assert missing["rcode"] == "NXDOMAIN"
        assert missing["ms"] < 100, missing
        outside = host_query(lab, host, "example.com")  # no upstream in the lab: SERVFAIL, never a hang
        assert outside["rcode"] == "SERVFAIL" and outside["ms"] < 100, outside

    async def from_pod() -> None:
        async with lab.client() as client:
            started = time.monotonic()
            code, out = await sh(client, "client", "nslookup nothing-here")
            assert code != 0 and ("NXDOMAIN" in out or "can't find" in out), out
            assert time.monotonic() - started < 5, "a missing name must not wait for resolver timeouts"

    run(from_pod())


DNS_LOOP = ('while true; do if nslookup web-service 2>&1 | grep -q "^Address: $WEB_SERVICE_SERVICE_HOST$"; '
            'then echo "$(date +%s) ok"; else echo "$(date +%s) FAIL"; fi; sleep 0.2; done')


def loop_results(lab: Lab, since: float) -> list[str]:
    """The dnsloop pod's verdicts after `since` (read from its CRI log file on n1)."""
    out = []
    for log in lab.dir.glob("n1/node/pods/default_dnsloop_*/dns/*.log"):
        for line in log.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[-2].isdigit() and int(parts[-2]) > since:
                out.append(parts[-1])
    return out


def test_dns_keeps_answering_without_api_servers(lab: Lab) -> None:
    async def start_loop() -> None:
        async with lab.client() as client:
            p = kinds.new(kinds.by_kind("Pod"), "dnsloop", "default")  # type: ignore[arg-type]
            assert isinstance(p, t.Pod)
            p.spec.node_name = "n1"
            p.spec.containers.add(name="dns", image=WEB, image_pull_policy="IfNotPresent",
                                  command=["/bin/sh", "-c", DNS_LOOP])
            await client.create(p)
            await wait_ready(client, ["dnsloop"])

    run(start_loop())
    deadline = time.monotonic() + 20
    while "ok" not in loop_results(lab, time.time() - 5):
        assert time.monotonic() < deadline, "the dnsloop pod never resolved web-service"
        time.sleep(0.5)
    apis = [d for d in lab.daemons("cp") if d.startswith("apiserver-")]
    assert apis
    for name in apis:
        lab.kill_daemon("cp", name)
    killed = time.time()
    try:
        time.sleep(3)  # the informers lose their watches and keep retrying
        for host in ("n1", "n2"):
            got = host_query(lab, host, f"web-service.default.svc.{DOMAIN}")
            assert got["rcode"] == "NOERROR" and len(got["answers"]) == 1, got
            got = host_query(lab, host, f"web-headless.default.svc.{DOMAIN}")
            assert len(got["answers"]) == 2, got
        # Each host's pods ask their own host's server: n1's pods keep resolving with n2's gone.
        lab.kill_daemon("n2", "clusterdns")
        time.sleep(3)
        verdicts = loop_results(lab, killed + 1)
        assert len(verdicts) >= 5 and set(verdicts) == {"ok"}, verdicts
    finally:
        for name in apis:
            lab.start_daemon("cp", name)
        lab.start_daemon("n2", "clusterdns")

"""NetworkPolicy through the api-server's registry in-process: defaults as upstream, validation,
and the namespace label `kubernetes.io/metadata.name` that namespaceSelectors rely on."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from controlplane.apiserver.forward import Forwarder
from controlplane.apiserver.inprocess import InProcessApi
from controlplane.apiserver.rest import http
from skiff import errors
from skiff.convert import from_data
from skiffpb.api.v1 import types_pb2 as t


def netpol(spec: dict[str, Any]) -> t.NetworkPolicy:
    return from_data({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                      "metadata": {"name": "np", "namespace": "default"}, "spec": spec}, t.NetworkPolicy)


@pytest.mark.parametrize(("spec", "types", "protocols"), [
    ({"podSelector": {}}, ["Ingress"], []),
    ({"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}, ["Ingress"], ["TCP"]),
    ({"podSelector": {}, "egress": [{"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53}]}]},
     ["Ingress", "Egress"], ["UDP", "TCP"]),
    ({"podSelector": {}, "policyTypes": ["Egress"]}, ["Egress"], []),
], ids=["empty-is-ingress", "ingress-rule", "egress-rule-adds-egress", "explicit-kept"])
async def test_defaults(spec: dict[str, Any], types: list[str], protocols: list[str]) -> None:
    api = InProcessApi()
    created = await api.create(netpol(spec))
    assert list(created.spec.policy_types) == types
    got = [p.protocol for r in (*created.spec.ingress, *created.spec.egress) for p in r.ports]
    assert got == protocols


def ingress_ports(*ports: dict[str, Any]) -> dict[str, Any]:
    return {"podSelector": {}, "ingress": [{"ports": list(ports)}]}


BAD = [
    ({"podSelector": {}, "policyTypes": ["Sideways"]}, "spec.policyTypes[0]"),
    ({"podSelector": {}, "policyTypes": ["Ingress", "Ingress"]}, "spec.policyTypes[1]"),
    ({"podSelector": {}, "ingress": [{"from": [{}]}]}, "spec.ingress[0].from[0]"),
    ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]},
     "spec.ingress[0].from[0]"),
    ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0/8"}}]}]},
     "spec.ingress[0].from[0].ipBlock.cidr"),
    ({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}]}]},
     "spec.egress[0].to[0].ipBlock.except[0]"),
    ({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]}}]}]},
     "spec.egress[0].to[0].ipBlock.except[0]"),
    (ingress_ports({"port": 80, "protocol": "ICMP"}), "spec.ingress[0].ports[0].protocol"),
    (ingress_ports({"port": 70000}), "spec.ingress[0].ports[0].port"),
    (ingress_ports({"port": "Not_A_Name"}), "spec.ingress[0].ports[0].port"),
    (ingress_ports({"port": 81, "endPort": 80}), "spec.ingress[0].ports[0].endPort"),
    (ingress_ports({"port": "http", "endPort": 80}), "spec.ingress[0].ports[0].endPort"),
    ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
     "spec.podSelector.matchExpressions[0].values"),
]


@pytest.mark.parametrize(("spec", "path"), BAD, ids=[
    "policy-type", "duplicate-type", "empty-peer", "ipblock-and-selector", "bad-cidr", "except-outside",
    "except-equal", "protocol", "port-range", "port-name", "end-port-below", "end-port-named", "selector"])
async def test_validation(spec: dict[str, Any], path: str) -> None:
    api = InProcessApi()
    with pytest.raises(errors.InvalidError) as info:
        await api.create(netpol(spec))
    assert path in str(info.value)


async def test_valid_policy_with_everything() -> None:
    api = InProcessApi()
    await api.create(netpol({
        "podSelector": {"matchLabels": {"app": "db"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}, "podSelector": {}},
                              {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                     "ports": [{"port": "http"}, {"port": 8000, "endPort": 8100, "protocol": "SCTP"},
                               {"protocol": "UDP"}]}],
        "egress": [{}],
    }))


async def test_namespaces_carry_their_name_label() -> None:
    api = InProcessApi()
    meta = t.ObjectMeta(name="team-a", labels={"kubernetes.io/metadata.name": "x"})
    ns = await api.create(t.Namespace(metadata=meta))
    assert ns.metadata.labels["kubernetes.io/metadata.name"] == "team-a"


POLICY_YAML = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-web, namespace: default}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: web}}
    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}
    ports: [{port: 5432}, {port: metrics, protocol: TCP}]
"""


async def test_kubectl_applies_gets_and_deletes_networkpolicies(tmp_path: Path) -> None:
    """The real kubectl (from `make setup`) over the REST API: discovery finds `netpol`."""
    kubectl = Path(__file__).resolve().parents[4] / ".venv" / "bin" / "kubectl"
    assert kubectl.exists(), "make setup installs kubectl"
    inproc = InProcessApi()
    await inproc.start()
    runner, port = await http.start(inproc.registry, Forwarder(inproc.registry), "127.0.0.1:0")
    manifest = tmp_path / "np.yaml"
    manifest.write_text(POLICY_YAML)

    async def run(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            str(kubectl), f"--server=http://127.0.0.1:{port}", f"--cache-dir={tmp_path / 'cache'}", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={"HOME": str(tmp_path)})
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        return out.decode()

    try:
        assert "networkpolicy.networking.k8s.io/db-from-web created" in await run("apply", "-f", str(manifest))
        table = await run("get", "netpol")
        assert table.split("\n")[0].split() == ["NAME", "POD-SELECTOR", "AGE"]
        assert table.split("\n")[1].split()[:2] == ["db-from-web", "app=db"]
        got = json.loads(await run("get", "networkpolicies.networking.k8s.io", "db-from-web", "-o", "json"))
        assert got["spec"]["policyTypes"] == ["Ingress"]
        assert got["spec"]["ingress"][0]["from"][1] == {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}
        assert [p["protocol"] for p in got["spec"]["ingress"][0]["ports"]] == ["TCP", "TCP"]
        assert "deleted" in await run("delete", "netpol", "db-from-web")
    finally:
        await runner.cleanup()
        await inproc.close()

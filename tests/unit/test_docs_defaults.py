"""Where the docs state a cluster default, they state the one skiff.defaults holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from skiff import defaults

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize(("doc", "phrase"), [
    ("apiserver.md", f"(default {defaults.SERVICE_CIDR};"),
    ("apiserver.md", f"--service-cidr {defaults.SERVICE_CIDR} --node-port-range {defaults.NODE_PORT_RANGE}"),
    ("controllers.md", f"`--cluster-cidr` ({defaults.CLUSTER_CIDR})"),
    ("lab.md", f"the service CIDR ({defaults.SERVICE_CIDR}) and the pod CIDR ({defaults.CLUSTER_CIDR})"),
    ("lab.md", f"LANs ({defaults.LAB_LAN_CIDR} for `skiff lab up`, {defaults.LOCAL_LAN_CIDR} for `make up`)"),
    ("nodeagent.md", f"--listen 10.77.0.11:{defaults.AGENT_PORT}"),
], ids=["apiserver-allocation", "apiserver-usage", "controllers-ipam", "lab-ranges", "lab-lans", "nodeagent-usage"])
def test_docs_state_the_defaults(doc: str, phrase: str) -> None:
    assert phrase in " ".join((DOCS / doc).read_text().split()), f"docs/{doc} should say: {phrase}"

"""controlplane/apiserver/rest/streams.py: what the node agent is asked to open for a request's
query (PodExecOptions, PodAttachOptions, PodPortForwardOptions), and the refusals."""

from __future__ import annotations

import pytest

from controlplane.apiserver import bootstrappolicy, rbac
from controlplane.apiserver.rbac import Attributes
from controlplane.apiserver.rest import streams
from skiff import errors


@pytest.mark.parametrize("kind, query, expected", [
    ("exec", {"command": ["cat"], "stdin": ["true"], "stdout": ["true"], "stderr": ["true"]},
     {"command": ["cat"], "stdin": True, "stdout": True, "stderr": True, "tty": False}),
    ("exec", {"command": ["sh"], "stdin": ["true"], "stdout": ["true"], "tty": ["true"], "stderr": ["true"],
              "container": ["web"]},
     {"command": ["sh"], "stdin": True, "stdout": True, "stderr": False, "tty": True, "container": "web"}),
    ("attach", {"stdin": ["1"], "stdout": ["1"], "command": ["ignored"]},
     {"command": [], "stdin": True, "stdout": True, "stderr": False, "tty": False}),
    ("portforward", {"ports": ["80,8080", "81"]}, {"ports": [80, 8080, 81]}),
    ("portforward", {}, {"ports": []}),
], ids=["exec-stdin", "exec-tty-drops-stderr", "attach-has-no-command", "portforward-ports", "portforward-no-ports"])
def test_stream_open(kind: str, query: dict[str, list[str]], expected: dict[str, object]) -> None:
    opened = streams.stream_open(kind, "default", "web-1", query)
    assert (opened.kind, opened.namespace, opened.pod) == (kind, "default", "web-1")
    for field, value in expected.items():
        got = getattr(opened, field)
        assert (list(got) if isinstance(value, list) else got) == value, field


@pytest.mark.parametrize("kind, query, problem", [
    ("exec", {"stdin": ["true"]}, "command: required"),
    ("exec", {"command": ["ls"]}, "at least 1 of stdin, stdout, stderr"),
    ("attach", {"tty": ["true"], "stderr": ["true"]}, "at least 1 of stdin, stdout, stderr"),
    ("portforward", {"ports": ["http"]}, "'http' is not a port number"),
    ("portforward", {"ports": ["70000"]}, "'70000' is not a port number"),
], ids=["no-command", "no-stream", "tty-only-stderr", "named-port", "port-range"])
def test_stream_open_refusals(kind: str, query: dict[str, list[str]], problem: str) -> None:
    with pytest.raises(errors.InvalidError, match=problem):
        streams.stream_open(kind, "default", "web-1", query)


@pytest.mark.parametrize("role, sub, allowed", [
    ("edit", "portforward", True),
    ("edit", "attach", True),
    ("admin", "portforward", True),
    ("view", "portforward", False),
    ("view", "attach", False),
], ids=["edit-portforward", "edit-attach", "admin-portforward", "view-no-portforward", "view-no-attach"])
def test_which_roles_may_connect(role: str, sub: str, allowed: bool) -> None:
    rules = next(r for r in bootstrappolicy.cluster_roles() if r.metadata.name == role).rules
    attrs = Attributes("create", "pods", sub, namespace="default", name="web-1")
    assert any(rbac.rule_allows(rule, attrs) for rule in rules) is allowed

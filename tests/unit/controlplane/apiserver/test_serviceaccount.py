"""controlplane/apiserver/serviceaccount.py: service-account tokens signed, verified and bound, and
the Authenticator taking them as bearer tokens."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, replace
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from google.protobuf.message import Message

from controlplane.apiserver import caller, serviceaccount
from controlplane.apiserver.authn import Authenticator, Peer
from controlplane.apiserver.serviceaccount import Claims, TokenAuthority
from skiff import errors, identity, pki
from skiffpb.api.v1 import types_pb2 as t

ISSUER = "https://kubernetes.default.svc.cluster.local"
NOW = 1_800_000_000
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
AUTHORITY = TokenAuthority(KEY, (KEY.public_key(),), ISSUER, (ISSUER,))

CLAIMS = Claims("default", "robot", "sa-uid-1", (ISSUER,), NOW - 60, NOW + 3600, "web-1", "pod-uid-1")


def sa(name: str = "robot", uid: str = "sa-uid-1") -> t.ServiceAccount:
    out = t.ServiceAccount()
    out.metadata.name, out.metadata.namespace, out.metadata.uid = name, "default", uid
    return out


def pod(name: str = "web-1", uid: str = "pod-uid-1", *, deleting: bool = False) -> t.Pod:
    out = t.Pod()
    out.metadata.name, out.metadata.namespace, out.metadata.uid = name, "default", uid
    out.spec.service_account_name = "robot"
    if deleting:
        out.metadata.deletion_timestamp.seconds = NOW
    return out


class Objects:
    """The registry's `get` over a few objects (who reads is recorded)."""

    def __init__(self, *items: t.ServiceAccount | t.Pod) -> None:
        self.items: dict[tuple[str, str], Message] = {
            ("serviceaccounts" if isinstance(i, t.ServiceAccount) else "pods", i.metadata.name): i for i in items}
        self.callers: list[identity.UserInfo] = []

    async def get(self, resource: str, namespace: str, name: str) -> Message:
        self.callers.append(caller.current())
        if (resource, name) not in self.items:
            raise errors.NotFoundError(f"{resource} {name} not found")
        return self.items[(resource, name)]


def unsigned(payload: dict[str, Any]) -> str:
    """A token with alg "none" (what a forger sends)."""
    def part(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."


def test_claims_are_kubernetes_claims() -> None:
    token = serviceaccount.sign(CLAIMS, key=KEY, issuer=ISSUER, jti="j1")
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256" and header["kid"] == serviceaccount.key_id(KEY.public_key())
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload == {
        "iss": ISSUER, "sub": "system:serviceaccount:default:robot", "aud": [ISSUER], "iat": NOW - 60,
        "nbf": NOW - 60, "exp": NOW + 3600, "jti": "j1",
        "kubernetes.io": {"namespace": "default", "serviceaccount": {"name": "robot", "uid": "sa-uid-1"},
                          "pod": {"name": "web-1", "uid": "pod-uid-1"}}}


@dataclass(frozen=True)
class Case:
    claims: Claims = CLAIMS
    key: rsa.RSAPrivateKey = KEY
    issuer: str = ISSUER
    token: str = ""  # instead of signing `claims`
    error: str = ""


@pytest.mark.parametrize("case", [
    Case(),
    Case(claims=replace(CLAIMS, audiences=("other", ISSUER))),
    Case(claims=replace(CLAIMS, expires_at=NOW), error="expired"),
    Case(claims=replace(CLAIMS, expires_at=NOW - 1), error="expired"),
    Case(claims=replace(CLAIMS, issued_at=NOW + 10), error="not valid yet"),
    Case(claims=replace(CLAIMS, audiences=("https://other.example",)), error="not for this audience"),
    Case(key=OTHER_KEY, error="signature does not verify"),
    Case(issuer="https://evil.example", error="another issuer"),
    Case(token=unsigned({"iss": ISSUER, "sub": "system:serviceaccount:default:robot", "aud": [ISSUER],
                         "iat": NOW, "exp": NOW + 60}), error="invalid service-account token"),
    Case(token="a.b.c", error="invalid service-account token"),
], ids=["valid", "one-of-its-audiences", "expires-now", "expired", "not-yet-valid", "wrong-audience", "wrong-key",
        "wrong-issuer", "alg-none", "garbage"])
def test_verify(case: Case) -> None:
    token = case.token or serviceaccount.sign(case.claims, key=case.key, issuer=case.issuer)
    if not case.error:
        assert AUTHORITY.verify(token, now=NOW) == case.claims
        return
    with pytest.raises(errors.UnauthenticatedError, match=case.error):
        AUTHORITY.verify(token, now=NOW)


def test_verify_refuses_a_subject_other_than_the_account() -> None:
    payload = {"iss": ISSUER, "sub": "system:serviceaccount:kube-system:admin", "aud": [ISSUER], "iat": NOW,
               "exp": NOW + 60, "kubernetes.io": {"namespace": "default", "serviceaccount": {"name": "robot"}}}
    token = jwt.encode(payload, KEY, algorithm="RS256")
    with pytest.raises(errors.UnauthenticatedError, match="subject"):
        AUTHORITY.verify(token, now=NOW)


@pytest.mark.parametrize(("claims", "objects", "error"), [
    (CLAIMS, (sa(), pod()), ""),
    (replace(CLAIMS, pod_name="", pod_uid=""), (sa(),), ""),
    (CLAIMS, (pod(),), "service account default/robot has been deleted"),
    (CLAIMS, (sa(uid="sa-uid-2"), pod()), "deleted and recreated"),
    (CLAIMS, (sa(),), "pod default/web-1 has been deleted"),
    (CLAIMS, (sa(), pod(uid="pod-uid-2")), "pod default/web-1 has been deleted and recreated"),
    (CLAIMS, (sa(), pod(deleting=True)), "being deleted"),
], ids=["bound-to-a-live-pod", "unbound", "deleted-sa", "sa-uid-mismatch", "deleted-pod", "pod-uid-mismatch",
        "pod-being-deleted"])
async def test_check_bound(claims: Claims, objects: tuple[t.ServiceAccount | t.Pod, ...], error: str) -> None:
    registry = Objects(*objects)
    if not error:
        user = await serviceaccount.check_bound(claims, registry)
        assert user == identity.service_account_user("default", "robot", "sa-uid-1")
        assert user.service_account == ("default", "robot")
        assert "system:serviceaccounts:default" in user.groups
        return
    with pytest.raises(errors.UnauthenticatedError, match=error):
        await serviceaccount.check_bound(claims, registry)


@pytest.mark.parametrize(("objects", "expect"), [
    ((sa(), pod()), "system:serviceaccount:default:robot"),
    ((sa(),), "deleted"),
], ids=["live", "pod-deleted"])
async def test_authenticator_takes_a_token_as_bearer(objects: tuple[t.ServiceAccount | t.Pod, ...],
                                                     expect: str) -> None:
    registry = Objects(*objects)
    authn = Authenticator(registry, clock=lambda: NOW, service_accounts=AUTHORITY)  # type: ignore[arg-type]
    token = serviceaccount.sign(CLAIMS, key=KEY, issuer=ISSUER)
    if expect.startswith("system:"):
        user = await authn.authenticate(Peer(bearer_token=token))
        assert user.name == expect and user.uid == "sa-uid-1"
        # The api-server reads the account as itself, not as the token's (not yet known) user.
        assert all(identity.MASTERS in c.groups for c in registry.callers)
        return
    with pytest.raises(errors.UnauthenticatedError, match=expect):
        await authn.authenticate(Peer(bearer_token=token))


async def test_authenticator_without_keys_refuses_tokens() -> None:
    authn = Authenticator(Objects(sa(), pod()), clock=lambda: NOW)  # type: ignore[arg-type]
    with pytest.raises(errors.UnauthenticatedError, match="no service-account tokens"):
        await authn.authenticate(Peer(bearer_token=serviceaccount.sign(CLAIMS, key=KEY, issuer=ISSUER)))


@pytest.mark.parametrize(("body", "spec", "error"), [
    ({}, serviceaccount.TokenRequestSpec(), ""),
    ({"kind": "TokenRequest", "spec": {"audiences": ["a"], "expirationSeconds": 7200,
                                       "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web-1",
                                                          "uid": "u"}}},
     serviceaccount.TokenRequestSpec(("a",), 7200, "web-1", "u"), ""),
    ({"kind": "Pod"}, None, "must be a TokenRequest"),
    ({"spec": {"audiences": "a"}}, None, "spec.audiences"),
    ({"spec": {"expirationSeconds": "1h"}}, None, "spec.expirationSeconds"),
    ({"spec": {"boundObjectRef": {"kind": "Secret", "name": "s"}}}, None, "only a v1 Pod"),
], ids=["defaults", "bound-to-a-pod", "wrong-kind", "audiences-not-a-list", "expiration-not-a-number",
        "bound-to-a-secret"])
def test_parse_token_request(body: dict[str, Any], spec: serviceaccount.TokenRequestSpec | None, error: str) -> None:
    if not error:
        assert serviceaccount.parse_token_request(body) == spec
        return
    with pytest.raises(errors.InvalidError, match=error):
        serviceaccount.parse_token_request(body)


@pytest.mark.parametrize(("spec", "error"), [
    (serviceaccount.TokenRequestSpec(), ""),
    (serviceaccount.TokenRequestSpec(bound_pod_name="web-1", bound_pod_uid="pod-uid-1"), ""),
    (serviceaccount.TokenRequestSpec(expiration_seconds=599), "expirationSeconds"),
    (serviceaccount.TokenRequestSpec(bound_pod_name="web-1", bound_pod_uid="other"), "does not match"),
    (serviceaccount.TokenRequestSpec(bound_pod_name="web-2"), "not found"),
], ids=["unbound", "bound", "too-short", "pod-uid-mismatch", "no-such-pod"])
async def test_issue_for(spec: serviceaccount.TokenRequestSpec, error: str) -> None:
    registry = Objects(sa(), pod())
    if error:
        with pytest.raises(errors.SkiffError, match=error):
            await serviceaccount.issue_for(AUTHORITY, registry, namespace="default", name="robot", spec=spec, now=NOW,
                                           requester=identity.INSECURE_ADMIN)
        return
    token, claims = await serviceaccount.issue_for(AUTHORITY, registry, namespace="default", name="robot",
                                                   spec=spec, now=NOW,
                                           requester=identity.INSECURE_ADMIN)
    assert claims.uid == "sa-uid-1" and claims.expires_at == NOW + 3600
    assert claims.pod_uid == ("pod-uid-1" if spec.bound_pod_name else "")
    assert AUTHORITY.verify(token, now=NOW + 3599) == claims
    with pytest.raises(errors.UnauthenticatedError, match="expired"):
        AUTHORITY.verify(token, now=NOW + 3600)


def test_pki_creates_the_sa_key_pair_once(tmp_path: Any) -> None:
    d = pki.PKIDir(tmp_path)
    assert "sa" in d.ensure([], now=pki.utcnow())
    assert oct(d.sa_key.stat().st_mode & 0o777) == "0o600"
    before = d.sa_key.read_bytes()
    assert "sa" not in d.ensure([], now=pki.utcnow())
    assert d.sa_key.read_bytes() == before
    authority = TokenAuthority.from_files(signing_key_file=str(d.sa_key), key_file=str(d.sa_pub), issuer=ISSUER)
    token, claims = authority.issue(namespace="default", name="robot", uid="u", now=NOW, expiration_seconds=600)
    assert authority.verify(token, now=NOW) == claims


@pytest.mark.parametrize(("node", "spec", "error"), [
    ("n1", serviceaccount.TokenRequestSpec(bound_pod_name="web-1"), ""),
    ("n2", serviceaccount.TokenRequestSpec(bound_pod_name="web-1"), "scheduled on a different node"),
    ("n1", serviceaccount.TokenRequestSpec(), "not bound to a pod"),
], ids=["own-pod", "another-nodes-pod", "unbound"])
async def test_a_node_gets_tokens_only_for_its_own_pods(node: str, spec: serviceaccount.TokenRequestSpec,
                                                        error: str) -> None:
    bound = pod()
    bound.spec.node_name = "n1"
    registry = Objects(sa(), bound)
    issue = serviceaccount.issue_for(AUTHORITY, registry, namespace="default", name="robot", spec=spec, now=NOW,
                                     requester=identity.node_user(node))
    if not error:
        _, claims = await issue
        assert claims.pod_name == "web-1"
        return
    with pytest.raises(errors.ForbiddenError, match=error):
        await issue

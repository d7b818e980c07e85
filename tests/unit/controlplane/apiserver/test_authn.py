"""controlplane/apiserver/authn.py: bootstrap tokens against their Secrets, and who a request is."""

from __future__ import annotations

import datetime as dt

import pytest
from google.protobuf.message import Message

from controlplane.apiserver import caller
from controlplane.apiserver.authn import Authenticator, Peer, check_bootstrap_secret, parse_token
from skiff import errors, identity
from skiffpb.api.v1 import types_pb2 as t

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)


def secret(**fields: str) -> t.Secret:
    s = t.Secret(type=fields.pop("type", "bootstrap.kubernetes.io/token"))
    s.metadata.name, s.metadata.namespace = "bootstrap-token-abcdef", "kube-system"
    base = {"token-id": "abcdef", "token-secret": "0123456789abcdef", "usage-bootstrap-authentication": "true"}
    for key, value in {**base, **fields}.items():
        if value:
            s.data[key] = value.encode()
    return s


@pytest.mark.parametrize(("token", "parsed"), [
    ("abcdef.0123456789abcdef", ("abcdef", "0123456789abcdef")),
    ("ABCDEF.0123456789abcdef", None),
    ("abcdef.0123456789abcde", None),
    ("abcdef-0123456789abcdef", None),
    ("", None),
], ids=["valid", "upper-case", "short-secret", "no-dot", "empty"])
def test_parse_token(token: str, parsed: tuple[str, str] | None) -> None:
    assert parse_token(token) == parsed


@pytest.mark.parametrize(("s", "presented", "error"), [
    (secret(), "0123456789abcdef", ""),
    (secret(expiration="2026-12-08T00:00:00Z"), "0123456789abcdef", ""),
    (secret(expiration="2026-12-07T11:59:59Z"), "0123456789abcdef", "expired"),
    (secret(expiration="not a time"), "0123456789abcdef", "expired"),
    (secret(), "ffffffffffffffff", "invalid"),
    (secret(type="Opaque"), "0123456789abcdef", "invalid"),
    (secret(**{"usage-bootstrap-authentication": ""}), "0123456789abcdef", "not for authentication"),
    (secret(**{"token-id": "zzzzzz"}), "0123456789abcdef", "invalid"),
], ids=["valid", "not-yet-expired", "expired", "bad-expiration", "wrong-secret", "wrong-type",
        "not-for-authentication", "other-id"])
def test_check_bootstrap_secret(s: t.Secret, presented: str, error: str) -> None:
    if not error:
        user = check_bootstrap_secret(s, "abcdef", presented, now=NOW)
        assert user.name == "system:bootstrap:abcdef"
        assert identity.BOOTSTRAPPERS in user.groups and identity.AUTHENTICATED in user.groups
        return
    with pytest.raises(errors.UnauthenticatedError, match=error):
        check_bootstrap_secret(s, "abcdef", presented, now=NOW)


def test_extra_groups_are_only_bootstrapper_groups() -> None:
    s = secret(**{"auth-extra-groups": "system:bootstrappers:worker,system:masters"})
    user = check_bootstrap_secret(s, "abcdef", "0123456789abcdef", now=NOW)
    assert "system:bootstrappers:worker" in user.groups and identity.MASTERS not in user.groups


class Secrets:
    def __init__(self, *items: t.Secret) -> None:
        self.items = {i.metadata.name: i for i in items}
        self.callers: list[identity.UserInfo] = []

    async def get(self, resource: str, namespace: str, name: str) -> Message:
        self.callers.append(caller.current())
        if name not in self.items:
            raise errors.NotFoundError(name)
        return self.items[name]


NODE = identity.node_user("n1")


@pytest.mark.parametrize(("peer", "anonymous_ok", "insecure", "expected"), [
    (Peer(NODE), False, False, NODE.name),
    (Peer(NODE, "abcdef.0123456789abcdef"), False, False, NODE.name),
    (Peer(None, "abcdef.0123456789abcdef"), False, False, "system:bootstrap:abcdef"),
    (Peer(None, "abcdef.ffffffffffffffff"), False, False, "401"),
    (Peer(None, "qqqqqq.0123456789abcdef"), False, False, "401"),
    (Peer(None, "garbage"), False, False, "401"),
    (Peer(), False, False, "401"),
    (Peer(), True, False, identity.ANONYMOUS),
    (Peer(), False, True, identity.ADMIN),
], ids=["certificate", "certificate-wins", "token", "wrong-secret", "deleted", "garbage", "nothing",
        "anonymous-path", "insecure"])
async def test_authenticate(peer: Peer, anonymous_ok: bool, insecure: bool, expected: str) -> None:
    secrets = Secrets(secret())
    authn = Authenticator(secrets, insecure=insecure, clock=lambda: NOW.timestamp())
    if expected == "401":
        with pytest.raises(errors.UnauthenticatedError):
            await authn.authenticate(peer, anonymous_ok=anonymous_ok)
    else:
        assert (await authn.authenticate(peer, anonymous_ok=anonymous_ok)).name == expected
    # The Secret is read as the api-server itself, never as the (not yet known) caller.
    assert all(identity.MASTERS in c.groups for c in secrets.callers)

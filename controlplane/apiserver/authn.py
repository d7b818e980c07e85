"""Authentication: who sent a request, from its TLS client certificate or its bearer token.

Both front ends (gRPC in server.py, HTTP in rest/http.py) call one `Authenticator`, which
returns a skiff.identity.UserInfo or raises UnauthenticatedError; they then serve the request
`caller.acting_as` that user. Authorization is not decided here.

What must hold:
- A client certificate counts only when the TLS layer verified it against the cluster CA
  (gRPC's auth context; the HTTPS server's verified peer certificate); its subject is the user
  as Kubernetes reads it (CN user, O groups).
- A bearer token is a bootstrap token `<id>.<secret>` ([a-z0-9]{6}.[a-z0-9]{16}) matching the
  Secret `bootstrap-token-<id>` (type bootstrap.kubernetes.io/token) in kube-system, with
  `usage-bootstrap-authentication: "true"` and an `expiration` not yet passed: the user is
  `system:bootstrap:<id>` in `system:bootstrappers` (plus its `auth-extra-groups`). A deleted,
  expired or mismatching token is refused; the secret is compared in constant time.
- A bearer token with three dot-separated parts is a service-account JWT (serviceaccount.py):
  its signature, issuer, audience and lifetime are checked, then the service account and the pod
  it is bound to must still exist with the uids it names; the user is
  skiff.identity.service_account_user(ns, name, uid). Without service-account keys such a token
  is refused.
- No credentials: UNAUTHENTICATED, except the anonymous paths Kubernetes allows without them
  (the REST front end's /healthz, /livez, /readyz, /version) where the caller is anonymous.
- In `--insecure` mode every caller is skiff.identity.INSECURE_ADMIN (development only).
"""

from __future__ import annotations

import datetime as dt
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from google.protobuf.message import Message

from controlplane.apiserver import caller, serviceaccount
from skiff import bootstraptoken, errors, identity
from skiff.identity import UserInfo
from skiffpb.api.v1 import types_pb2 as t

SYSTEM_NAMESPACE = bootstraptoken.NAMESPACE
BOOTSTRAP_TOKEN_TYPE = bootstraptoken.SECRET_TYPE
BOOTSTRAP_SECRET_PREFIX = bootstraptoken.SECRET_PREFIX
# Who the api-server is when it reads the Secrets behind tokens (kube-apiserver's loopback user).
SELF = UserInfo("system:apiserver", (identity.MASTERS, identity.AUTHENTICATED))


parse_token = bootstraptoken.parse


def _field(secret: t.Secret, key: str) -> str:
    if key in secret.data:
        return secret.data[key].decode(errors="replace")
    return secret.string_data.get(key, "")


def _parse_time(text: str) -> dt.datetime | None:
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def check_bootstrap_secret(secret: t.Secret, token_id: str, token_secret: str, *, now: dt.datetime) -> UserInfo:
    """The user a bootstrap token authenticates as, checked against its Secret (pure);
    UnauthenticatedError saying why not."""
    if secret.type != BOOTSTRAP_TOKEN_TYPE:
        raise errors.UnauthenticatedError("invalid bootstrap token")
    if _field(secret, "token-id") != token_id or not hmac.compare_digest(
            _field(secret, "token-secret").encode(), token_secret.encode()):
        raise errors.UnauthenticatedError("invalid bootstrap token")
    if _field(secret, "usage-bootstrap-authentication") != "true":
        raise errors.UnauthenticatedError("the bootstrap token is not for authentication")
    expiration = _field(secret, "expiration")
    if expiration:
        when = _parse_time(expiration)
        if when is None or when <= now:
            raise errors.UnauthenticatedError("the bootstrap token has expired")
    if secret.metadata.HasField("deletion_timestamp"):
        raise errors.UnauthenticatedError("the bootstrap token is being deleted")
    extra = tuple(g.strip() for g in _field(secret, "auth-extra-groups").split(",")
                  if g.strip().startswith("system:bootstrappers:"))
    return UserInfo(identity.BOOTSTRAP_PREFIX + token_id,
                    (identity.BOOTSTRAPPERS, *extra, identity.AUTHENTICATED))


class SecretGetter(Protocol):
    async def get(self, resource: str, namespace: str, name: str) -> Message: ...


@dataclass(frozen=True)
class Peer:
    """What a front end knows about a request's sender."""

    certificate_user: UserInfo | None = None  # from a client certificate the TLS layer verified
    bearer_token: str = ""


class Authenticator:
    def __init__(self, registry: SecretGetter | None, *, insecure: bool = False,
                 clock: Callable[[], float] = time.time,
                 service_accounts: serviceaccount.TokenAuthority | None = None) -> None:
        self.registry = registry
        self.service_accounts = service_accounts
        self.insecure = insecure
        self.clock = clock

    async def authenticate(self, peer: Peer, *, anonymous_ok: bool = False) -> UserInfo:
        if self.insecure:
            return identity.INSECURE_ADMIN
        if peer.certificate_user is not None:
            return peer.certificate_user
        if peer.bearer_token:
            return await self.token_user(peer.bearer_token)
        if anonymous_ok:
            return caller.ANONYMOUS
        raise errors.UnauthenticatedError("Unauthorized: no client certificate or bearer token presented")

    async def token_user(self, token: str) -> UserInfo:
        if serviceaccount.looks_like_jwt(token):
            if self.service_accounts is None or self.registry is None:
                raise errors.UnauthenticatedError("invalid bearer token: this api-server accepts no service-account "
                                                  "tokens (no --service-account-key-file)")
            claims = self.service_accounts.verify(token, now=self.clock())
            with caller.acting_as(SELF):
                return await serviceaccount.check_bound(claims, self.registry)
        parsed = parse_token(token)
        if parsed is None or self.registry is None:
            raise errors.UnauthenticatedError("invalid bearer token")
        token_id, token_secret = parsed
        try:
            with caller.acting_as(SELF):
                secret = await self.registry.get("secrets", SYSTEM_NAMESPACE, BOOTSTRAP_SECRET_PREFIX + token_id)
        except errors.NotFoundError:
            raise errors.UnauthenticatedError("invalid bootstrap token (unknown or deleted)") from None
        assert isinstance(secret, t.Secret)
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        return check_bootstrap_secret(secret, token_id, token_secret, now=now)


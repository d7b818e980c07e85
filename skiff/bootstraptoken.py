"""Bootstrap tokens, as Kubernetes has them: `<id>.<secret>` ([a-z0-9]{6}.[a-z0-9]{16}), stored as
the Secret `bootstrap-token-<id>` of type `bootstrap.kubernetes.io/token` in kube-system.

The api-server authenticates a token by that Secret (controlplane/apiserver/authn.py); `skiff
token create` and the control-plane install make them; a joining node presents one once
(nodeagent/bootstrap.py). What must hold: tokens come from `secrets` (a CSPRNG); a token's
Secret says when it expires (RFC 3339, UTC) and that it is for authentication.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets

from skiffpb.api.v1 import types_pb2 as t

NAMESPACE = "kube-system"
SECRET_TYPE = "bootstrap.kubernetes.io/token"
SECRET_PREFIX = "bootstrap-token-"
TOKEN_RE = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
DEFAULT_TTL = dt.timedelta(hours=24)
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def generate() -> str:
    pick = secrets.choice
    return "".join(pick(_ALPHABET) for _ in range(6)) + "." + "".join(pick(_ALPHABET) for _ in range(16))


def parse(token: str) -> tuple[str, str] | None:
    """(id, secret) of a bootstrap token, None when it is not of that form."""
    m = TOKEN_RE.match(token)
    return (m.group(1), m.group(2)) if m else None


def secret_name(token_id: str) -> str:
    return SECRET_PREFIX + token_id


def make_secret(token: str, *, expires: dt.datetime | None, description: str = "",
                extra_groups: tuple[str, ...] = ()) -> t.Secret:
    """The Secret that makes `token` valid until `expires` (None: until deleted)."""
    parsed = parse(token)
    if parsed is None:
        raise ValueError(f"not a bootstrap token (<6 of [a-z0-9]>.<16 of [a-z0-9]>): {token!r}")
    token_id, token_secret = parsed
    s = t.Secret(api_version="v1", kind="Secret", type=SECRET_TYPE)
    s.metadata.name, s.metadata.namespace = secret_name(token_id), NAMESPACE
    s.data["token-id"] = token_id.encode()
    s.data["token-secret"] = token_secret.encode()
    s.data["usage-bootstrap-authentication"] = b"true"
    s.data["usage-bootstrap-signing"] = b"true"
    if expires is not None:
        s.data["expiration"] = expires.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    if description:
        s.data["description"] = description.encode()
    if extra_groups:
        s.data["auth-extra-groups"] = ",".join(extra_groups).encode()
    return s

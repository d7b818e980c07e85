"""Service-account tokens: the JWTs that pods (and `kubectl create token`) present to the api-server.

The api-server issues them (TokenRequest, `serviceaccounts/NAME/token`) and authenticates them
(authn.py) as Kubernetes does; the claims are Kubernetes' own, so a token says the same to any
consumer that reads Kubernetes tokens:

    {"iss": ISSUER, "sub": "system:serviceaccount:<ns>:<name>", "aud": [...],
     "iat": .., "nbf": .., "exp": .., "jti": ..,
     "kubernetes.io": {"namespace": ns, "serviceaccount": {"name", "uid"}, "pod": {"name", "uid"}}}

What must hold:
- Tokens are RS256 JWTs signed with the cluster's service-account key (pki.py's sa.key), through
  PyJWT over `cryptography`: nothing hand-rolled. Only RS256 is accepted when verifying (never
  "none", never an HMAC keyed with the public key).
- `verify` is pure (time is an argument): a token counts only when its signature verifies with
  the public key, its issuer is ours, one of its audiences is one the api-server accepts, and
  `nbf <= now < exp`. It says why not with UnauthenticatedError.
- A verified token is still refused unless the service account it names exists with the uid it
  names, and, when it is bound to a pod, that pod exists with the uid it names and is not being
  deleted (`check_bound`): deleting the SA or the pod revokes its tokens, as in Kubernetes.
- The user a token authenticates as is skiff.identity.service_account_user(ns, name, uid).
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.protobuf.message import Message

from controlplane.apiserver import nodeauthz
from skiff import errors, identity, serviceaccounts
from skiff.identity import UserInfo
from skiffpb.api.v1 import types_pb2 as t

ALGORITHM = "RS256"
KUBERNETES_CLAIM = "kubernetes.io"
# TokenRequest's bounds and default (kube-apiserver's): at least 10 minutes, 1 hour unless asked.
MIN_EXPIRATION_SECONDS = serviceaccounts.MIN_TOKEN_EXPIRATION
DEFAULT_EXPIRATION_SECONDS = serviceaccounts.DEFAULT_TOKEN_EXPIRATION
MAX_EXPIRATION_SECONDS = 2 ** 32


@dataclass(frozen=True)
class Claims:
    """What a service-account token says."""

    namespace: str
    name: str
    uid: str
    audiences: tuple[str, ...]
    issued_at: int
    expires_at: int
    pod_name: str = ""
    pod_uid: str = ""

    @property
    def subject(self) -> str:
        return f"{identity.SERVICE_ACCOUNT_PREFIX}{self.namespace}:{self.name}"

    def user(self) -> UserInfo:
        return identity.service_account_user(self.namespace, self.name, self.uid)


def looks_like_jwt(token: str) -> bool:
    """A JWT has three dot-separated parts (a bootstrap token has two)."""
    return token.count(".") == 2


def key_id(public_key: rsa.RSAPublicKey) -> str:
    """The `kid` Kubernetes puts in token headers: base64url(SHA-256 of the DER public key)."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")


def sign(claims: Claims, *, key: rsa.RSAPrivateKey, issuer: str, jti: str = "") -> str:
    private: dict[str, Any] = {"namespace": claims.namespace,
                               "serviceaccount": {"name": claims.name, "uid": claims.uid}}
    if claims.pod_name:
        private["pod"] = {"name": claims.pod_name, "uid": claims.pod_uid}
    payload = {"iss": issuer, "sub": claims.subject, "aud": list(claims.audiences), "iat": claims.issued_at,
               "nbf": claims.issued_at, "exp": claims.expires_at, "jti": jti or str(uuid.uuid4()),
               KUBERNETES_CLAIM: private}
    return jwt.encode(payload, key, algorithm=ALGORITHM, headers={"kid": key_id(key.public_key())})


def _refuse(why: str) -> errors.UnauthenticatedError:
    return errors.UnauthenticatedError(f"invalid service-account token: {why}")


def verify(token: str, *, public_keys: Sequence[rsa.RSAPublicKey], issuer: str, audiences: Sequence[str],
           now: float) -> Claims:
    """The claims of a token that verifies (see the module docstring); UnauthenticatedError otherwise."""
    payload: dict[str, Any] | None = None
    for public_key in public_keys:
        try:
            # Time is checked below against `now`; PyJWT checks signature, issuer and audience.
            payload = jwt.decode(token, public_key, algorithms=[ALGORITHM], audience=list(audiences), issuer=issuer,
                                 options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                                          "require": ["iss", "sub", "aud", "exp", "iat"]})
            break
        except jwt.InvalidSignatureError:
            continue
        except jwt.InvalidAudienceError:
            raise _refuse("not for this audience") from None
        except jwt.InvalidIssuerError:
            raise _refuse("another issuer") from None
        except jwt.PyJWTError as exc:
            raise _refuse(str(exc)) from None
    if payload is None:
        raise _refuse("the signature does not verify")
    exp, nbf = payload.get("exp"), payload.get("nbf", payload.get("iat"))
    if not isinstance(exp, int) or now >= exp:
        raise _refuse("expired")
    if isinstance(nbf, int) and now < nbf:
        raise _refuse("not valid yet")
    private = payload.get(KUBERNETES_CLAIM)
    if not isinstance(private, dict):
        raise _refuse(f"no {KUBERNETES_CLAIM} claim")
    sa, pod = private.get("serviceaccount") or {}, private.get("pod") or {}
    claims = Claims(namespace=str(private.get("namespace", "")), name=str(sa.get("name", "")),
                    uid=str(sa.get("uid", "")), audiences=tuple(payload["aud"] if isinstance(payload["aud"], list)
                                                                else [payload["aud"]]),
                    issued_at=int(payload["iat"]), expires_at=exp, pod_name=str(pod.get("name", "")),
                    pod_uid=str(pod.get("uid", "")))
    if not claims.namespace or not claims.name or payload.get("sub") != claims.subject:
        raise _refuse("its subject does not name a service account")
    return claims


class Getter(Protocol):
    async def get(self, resource: str, namespace: str, name: str) -> Message: ...


async def check_bound(claims: Claims, registry: Getter) -> UserInfo:
    """The token's user, if the service account (and pod) it names still exist with its uids. The
    caller reads as a user who may (authn.py: the api-server itself)."""
    try:
        sa = await registry.get("serviceaccounts", claims.namespace, claims.name)
    except errors.NotFoundError:
        raise _refuse(f"service account {claims.namespace}/{claims.name} has been deleted") from None
    assert isinstance(sa, t.ServiceAccount)
    if sa.metadata.uid != claims.uid:
        raise _refuse(f"service account {claims.namespace}/{claims.name} has been deleted and recreated")
    if claims.pod_name:
        try:
            pod = await registry.get("pods", claims.namespace, claims.pod_name)
        except errors.NotFoundError:
            raise _refuse(f"pod {claims.namespace}/{claims.pod_name} has been deleted") from None
        assert isinstance(pod, t.Pod)
        if pod.metadata.uid != claims.pod_uid:
            raise _refuse(f"pod {claims.namespace}/{claims.pod_name} has been deleted and recreated")
        if pod.metadata.HasField("deletion_timestamp"):
            raise _refuse(f"pod {claims.namespace}/{claims.pod_name} is being deleted")
    return claims.user()


@dataclass(frozen=True)
class TokenAuthority:
    """The api-server's service-account keys: signs (TokenRequest) and verifies (authentication)."""

    signing_key: rsa.RSAPrivateKey | None
    public_keys: tuple[rsa.RSAPublicKey, ...]
    issuer: str
    audiences: tuple[str, ...]

    @classmethod
    def from_files(cls, *, signing_key_file: str, key_file: str, issuer: str,
                   audiences: Sequence[str] = ()) -> TokenAuthority:
        signing = None
        if signing_key_file:
            loaded = serialization.load_pem_private_key(Path(signing_key_file).read_bytes(), password=None)
            if not isinstance(loaded, rsa.RSAPrivateKey):
                raise ValueError(f"{signing_key_file}: not an RSA private key")
            signing = loaded
        public: list[rsa.RSAPublicKey] = []
        for path in [p for p in key_file.split(",") if p]:
            pub = serialization.load_pem_public_key(Path(path).read_bytes())
            if not isinstance(pub, rsa.RSAPublicKey):
                raise ValueError(f"{path}: not an RSA public key")
            public.append(pub)
        if signing is not None and not public:
            public.append(signing.public_key())
        return cls(signing, tuple(public), issuer, tuple(audiences) or (issuer,))

    def issue(self, *, namespace: str, name: str, uid: str, now: float, expiration_seconds: int,
              audiences: Sequence[str] = (), pod_name: str = "", pod_uid: str = "") -> tuple[str, Claims]:
        if self.signing_key is None:
            raise errors.InvalidError("this api-server has no --service-account-signing-key-file: it issues no tokens")
        if not MIN_EXPIRATION_SECONDS <= expiration_seconds <= MAX_EXPIRATION_SECONDS:
            raise errors.InvalidError(f"spec.expirationSeconds: may not be less than {MIN_EXPIRATION_SECONDS} "
                                      f"seconds or more than 2^32 seconds", causes=(
                                          ("spec.expirationSeconds", "out of range"),))
        issued = int(now)
        claims = Claims(namespace, name, uid, tuple(audiences) or self.audiences, issued,
                        issued + expiration_seconds, pod_name, pod_uid)
        return sign(claims, key=self.signing_key, issuer=self.issuer), claims

    def verify(self, token: str, *, now: float) -> Claims:
        return verify(token, public_keys=self.public_keys, issuer=self.issuer, audiences=self.audiences, now=now)


# ---------------------------------------------------------------- TokenRequest (authentication.k8s.io/v1)

TOKEN_REQUEST_API_VERSION = "authentication.k8s.io/v1"


@dataclass(frozen=True)
class TokenRequestSpec:
    audiences: tuple[str, ...] = ()
    expiration_seconds: int = DEFAULT_EXPIRATION_SECONDS
    bound_pod_name: str = ""
    bound_pod_uid: str = ""


def parse_token_request(data: Any) -> TokenRequestSpec:
    """A TokenRequest body (JSON form); InvalidError naming the field that is wrong. Only pods
    can be bound objects (Kubernetes also binds to Secrets and Nodes)."""
    if not isinstance(data, dict) or data.get("kind") not in (None, "", "TokenRequest"):
        raise errors.InvalidError(f"the body must be a TokenRequest ({TOKEN_REQUEST_API_VERSION})")
    spec = data.get("spec") or {}
    if not isinstance(spec, dict):
        raise errors.InvalidError("spec: must be an object", causes=(("spec", "must be an object"),))
    audiences = spec.get("audiences") or []
    if not isinstance(audiences, list) or not all(isinstance(a, str) and a for a in audiences):
        raise errors.InvalidError("spec.audiences: must be a list of non-empty strings",
                                  causes=(("spec.audiences", "must be a list of non-empty strings"),))
    expiration = spec.get("expirationSeconds", DEFAULT_EXPIRATION_SECONDS)
    if isinstance(expiration, bool) or not isinstance(expiration, int):
        raise errors.InvalidError("spec.expirationSeconds: must be an integer",
                                  causes=(("spec.expirationSeconds", "must be an integer"),))
    ref = spec.get("boundObjectRef") or {}
    if not isinstance(ref, dict):
        raise errors.InvalidError("spec.boundObjectRef: must be an object")
    if ref and (ref.get("kind") != "Pod" or ref.get("apiVersion", "v1") != "v1" or not ref.get("name")):
        raise errors.InvalidError("spec.boundObjectRef: only a v1 Pod with a name can be bound to a token",
                                  causes=(("spec.boundObjectRef", "must name a v1 Pod"),))
    return TokenRequestSpec(tuple(audiences), expiration, str(ref.get("name", "")), str(ref.get("uid", "")))


def token_request_response(*, namespace: str, name: str, spec: TokenRequestSpec, token: str, claims: Claims,
                           created: str, expires: str) -> dict[str, Any]:
    """The TokenRequest the api-server answers (timestamps already in RFC 3339)."""
    out_spec: dict[str, Any] = {"audiences": list(claims.audiences),
                                "expirationSeconds": claims.expires_at - claims.issued_at}
    if claims.pod_name:
        out_spec["boundObjectRef"] = {"kind": "Pod", "apiVersion": "v1", "name": claims.pod_name,
                                      "uid": claims.pod_uid}
    return {"kind": "TokenRequest", "apiVersion": TOKEN_REQUEST_API_VERSION,
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
            "spec": out_spec, "status": {"token": token, "expirationTimestamp": expires}}


async def issue_for(authority: TokenAuthority, registry: Getter, *, namespace: str, name: str,
                    spec: TokenRequestSpec, now: float, requester: UserInfo) -> tuple[str, Claims]:
    """Issue a token for an existing service account (and pod, which must use that account) to
    `requester` (a node only for its own pods: nodeauthz.token_restriction). The caller reads as a
    user who may."""
    sa = await registry.get("serviceaccounts", namespace, name)
    assert isinstance(sa, t.ServiceAccount)
    pod_name = pod_uid = ""
    bound: t.Pod | None = None
    if spec.bound_pod_name:
        pod = await registry.get("pods", namespace, spec.bound_pod_name)
        assert isinstance(pod, t.Pod)
        if spec.bound_pod_uid and pod.metadata.uid != spec.bound_pod_uid:
            raise errors.ConflictError(f"the UID in the bound object reference ({spec.bound_pod_uid}) does not "
                                       f"match pod {namespace}/{pod.metadata.name} ({pod.metadata.uid})")
        if (pod.spec.service_account_name or "default") != name:
            raise errors.InvalidError(f"pod {namespace}/{pod.metadata.name} runs as service account "
                                      f"{pod.spec.service_account_name or 'default'}, not {name}")
        pod_name, pod_uid, bound = pod.metadata.name, pod.metadata.uid, pod
    refusal = nodeauthz.token_restriction(requester, bound)
    if refusal is not None:
        raise errors.ForbiddenError(refusal)
    return authority.issue(namespace=namespace, name=name, uid=sa.metadata.uid, now=now,
                           expiration_seconds=spec.expiration_seconds, audiences=spec.audiences,
                           pod_name=pod_name, pod_uid=pod_uid)

"""Service-account tokens for `serviceAccountToken` projections (the kubelet's token manager).

The agent asks the api-server for each token (gRPC CreateToken: the pod's ServiceAccount, the
projection's audience, or the api-server's own when it names none, the projection's
expirationSeconds, bound to the pod's name and uid), keeps it in memory, and hands it to the
volume writer (volumes.py), which writes it with the projection's other files in one atomic
`..data` swap.

What must hold:
- `refresh_at` and `needs_refresh` are pure (time is an argument): a token is renewed once 80%
  of its life has passed, or 24 hours after it was issued, whichever comes first (the kubelet's
  rule, without its jitter); an expired token is always renewed;
- a token that cannot be renewed stays in use until it expires (the api-server may be away for
  a while); without any valid token the volume is not ready (the container waits in
  ContainerCreating and the worker retries); a failed request is not repeated for
  RETRY_AFTER_FAILURE seconds;
- after an agent restart, the token a running pod's volume already holds is used again when it
  is for this pod and not due for renewal (`token_times` reads its iat/exp), so a restart does
  not cost a token request per pod; the file keeps being refreshed as before;
- `next_refresh` tells the pod worker when to wake up for the next renewal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import jwt

from nodeagent.volumes import VolumeNotReady
from skiff import errors, serviceaccounts
from skiffpb.api.v1 import apiserver_pb2 as api
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("nodeagent.tokens")

MAX_TTL = 24 * 3600  # a token is renewed a day after it was issued, however long it lives
REFRESH_FRACTION = 0.8  # ... or once 80% of its life has passed
# After a failed request, the same token is not asked for again for this long: a call to an
# api-server that is away takes up to the client's deadline, and the pod worker waits for it.
RETRY_AFTER_FAILURE = 10.0


@dataclass(frozen=True)
class TokenKey:
    """What a token is requested for; one token per key."""

    namespace: str
    service_account: str
    audience: str
    expiration_seconds: int
    pod_name: str
    pod_uid: str


@dataclass(frozen=True)
class Token:
    token: str
    issued_at: int
    expires_at: int


def refresh_at(issued_at: int, expires_at: int) -> float:
    """When a token issued at `issued_at` and expiring at `expires_at` is due for renewal."""
    return min(issued_at + REFRESH_FRACTION * (expires_at - issued_at), issued_at + MAX_TTL)


def needs_refresh(token: Token, now: float) -> bool:
    return now >= token.expires_at or now >= refresh_at(token.issued_at, token.expires_at)


def token_times(token: str) -> tuple[int, int, str] | None:
    """(iat, exp, bound pod uid) of a service-account JWT, read without verifying it (the agent
    only decides when to renew a token the api-server gave it); None when it is not one."""
    try:
        claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    iat, exp = claims.get("iat"), claims.get("exp")
    if not isinstance(iat, int) or not isinstance(exp, int):
        return None
    private = claims.get("kubernetes.io")
    pod = private.get("pod") if isinstance(private, dict) else None
    return iat, exp, str(pod.get("uid", "")) if isinstance(pod, dict) else ""


def projections(pod: t.Pod) -> Iterator[tuple[str, t.ServiceAccountTokenProjection]]:
    """(volume name, projection) of every serviceAccountToken projection of the pod."""
    for volume in pod.spec.volumes:
        for src in volume.projected.sources:
            if src.HasField("service_account_token"):
                yield volume.name, src.service_account_token


def key_for(pod: t.Pod, projection: t.ServiceAccountTokenProjection) -> TokenKey:
    seconds = projection.expiration_seconds if projection.HasField("expiration_seconds") \
        else serviceaccounts.DEFAULT_TOKEN_EXPIRATION
    return TokenKey(pod.metadata.namespace, pod.spec.service_account_name or "default", projection.audience,
                    seconds, pod.metadata.name, pod.metadata.uid)


@runtime_checkable
class TokenClient(Protocol):
    """The one call the token manager makes (skiff.client.Client's)."""

    async def create_token(self, namespace: str, name: str, *, audiences: Sequence[str] = (),
                           expiration_seconds: int = 0, bound_pod_name: str = "",
                           bound_pod_uid: str = "") -> api.CreateTokenResponse: ...


OnDisk = Callable[[str, str], bytes | None]  # (volume name, path in it) -> what the volume holds


class TokenManager:
    """The tokens of this node's pods (see the module docstring); `token` is the volume writer's
    TokenSource."""

    def __init__(self, client: TokenClient, *, clock: Callable[[], float]) -> None:
        self.client = client
        self.clock = clock
        self.tokens: dict[TokenKey, Token] = {}
        self.errors: dict[TokenKey, str] = {}
        self.failed_at: dict[TokenKey, float] = {}

    async def ensure(self, pod: t.Pod, *, on_disk: OnDisk | None = None) -> None:
        """Have a valid token for each projection of `pod`, renewing the ones due."""
        now = self.clock()
        for volume, projection in projections(pod):
            key = key_for(pod, projection)
            current = self.tokens.get(key)
            if current is None and on_disk is not None:
                current = self._adopt(key, on_disk(volume, projection.path))
            if current is not None and not needs_refresh(current, now):
                continue
            if now < self.failed_at.get(key, -RETRY_AFTER_FAILURE) + RETRY_AFTER_FAILURE:
                continue
            try:
                response = await self.client.create_token(
                    key.namespace, key.service_account, audiences=[key.audience] if key.audience else [],
                    expiration_seconds=key.expiration_seconds, bound_pod_name=key.pod_name, bound_pod_uid=key.pod_uid)
            except (errors.SkiffError, TimeoutError, OSError) as exc:
                self.errors[key] = str(exc)
                self.failed_at[key] = now
                if current is not None and now < current.expires_at:
                    log.warning("pod %s/%s: renewing its service-account token: %s (the current one is valid "
                                "until %d)", key.namespace, key.pod_name, exc, current.expires_at)
                continue
            times = token_times(response.token)
            issued = times[0] if times else int(now)
            self.tokens[key] = Token(response.token, issued, int(response.expiration_timestamp))
            self.errors.pop(key, None)
            self.failed_at.pop(key, None)
            log.info("pod %s/%s: service-account token for %s issued (expires at %d)", key.namespace, key.pod_name,
                     key.service_account, response.expiration_timestamp)

    def _adopt(self, key: TokenKey, content: bytes | None) -> Token | None:
        """The token a volume already holds, if it is for this pod (an agent restart)."""
        if not content:
            return None
        text = content.decode(errors="replace")
        times = token_times(text)
        if times is None or times[2] != key.pod_uid:
            return None
        token = Token(text, times[0], times[1])
        self.tokens[key] = token
        return token

    def token(self, pod: t.Pod, projection: t.ServiceAccountTokenProjection) -> str:
        """The current token; VolumeNotReady when there is no valid one."""
        key = key_for(pod, projection)
        current = self.tokens.get(key)
        if current is None or self.clock() >= current.expires_at:
            why = self.errors.get(key, "not requested yet")
            raise VolumeNotReady(f"service account token for {key.namespace}/{key.service_account}: {why}")
        return current.token

    def next_refresh(self, pod: t.Pod) -> float | None:
        """When the earliest token of `pod` is due for renewal, or the retry of a failed request
        (None: nothing to do for it)."""
        times = []
        for _, projection in projections(pod):
            key = key_for(pod, projection)
            due = [refresh_at(tok.issued_at, tok.expires_at)] if (tok := self.tokens.get(key)) is not None else []
            if key in self.failed_at:
                due = [max([*due, self.failed_at[key] + RETRY_AFTER_FAILURE])]
            times += due
        return min(times) if times else None

    def forget(self, uid: str) -> None:
        """Drop the tokens of a pod that is gone from the node."""
        for key in [k for k in self.tokens if k.pod_uid == uid]:
            del self.tokens[key]
        for key in [k for k in self.errors if k.pod_uid == uid]:
            del self.errors[key]
            self.failed_at.pop(key, None)

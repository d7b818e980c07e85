"""Bounds on what one api-server serves at once: requests in flight and watches per client.

Like kube-apiserver's max-in-flight filter: read-only and mutating requests have separate limits
(`--max-requests-inflight`, `--max-mutating-requests-inflight`), so a storm of lists cannot keep
writes out, nor a storm of writes the reads. Long-running requests (watch, logs, exec) hold no
in-flight slot; instead the watches one client holds open are counted, and bounded by
`--max-watches-per-client`. A client is the authenticated user at one host address (every
component of one host shares the host's address; two users on one host are two clients).

What must hold:
- both front ends (gRPC `server.py`, REST `rest/http.py`) classify and admit through this module
  only: `verb_class` is the one table of which verb is read-only, mutating or long-running;
- a refused request never reaches the registry: it fails with `TooManyRequestsError`
  (RESOURCE_EXHAUSTED over gRPC, 429 over HTTP) carrying `retry_after` seconds, the hint the
  client waits out before trying again (`Retry-After` over HTTP);
- a slot is released however the request ends (answer, error, cancellation), exactly once;
- a limit of 0 means unlimited.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from skiff import errors
from skiff.identity import UserInfo

READ_ONLY, MUTATING, WATCH, LONG_RUNNING, EXEMPT = "read-only", "mutating", "watch", "long-running", "exempt"

# The one classification of verbs (Kubernetes' request verbs, plus Skiff's gRPC-only ones).
VERB_CLASSES: dict[str, str] = {
    "get": READ_ONLY, "list": READ_ONLY, "version": READ_ONLY,
    "create": MUTATING, "update": MUTATING, "patch": MUTATING, "delete": MUTATING, "bind": MUTATING,
    "watch": WATCH,
    "logs": LONG_RUNNING, "exec": LONG_RUNNING, "attach": LONG_RUNNING, "portforward": LONG_RUNNING,
    "healthz": EXEMPT, "discovery": EXEMPT,
}

# The gRPC methods of skiff.api.v1.ApiServer as verbs.
GRPC_VERBS: dict[str, str] = {
    "Create": "create", "Get": "get", "List": "list", "Update": "update", "UpdateStatus": "update",
    "Delete": "delete", "Watch": "watch", "WatchBatch": "watch", "Bind": "bind", "BindBatch": "bind",
    "Logs": "logs", "Exec": "exec",
    "Version": "version",
    # A question about oneself: counted as Kubernetes counts a SelfSubjectAccessReview (a create).
    "AccessReview": "create",
}


def verb_class(verb: str) -> str:
    """READ_ONLY, MUTATING, WATCH, LONG_RUNNING or EXEMPT; an unknown verb counts as mutating."""
    return VERB_CLASSES.get(verb, MUTATING)


def grpc_verb(method: str) -> str:
    """The verb of a gRPC method path ("/skiff.api.v1.ApiServer/List" -> "list")."""
    name = method.rsplit("/", 1)[-1]
    return GRPC_VERBS.get(name, name.lower())


def client_key(user: UserInfo, address: str) -> str:
    """Who a watch is counted against: the user at a host address.

    `address` is a gRPC peer ("ipv4:10.0.0.2:51234", "ipv6:[::1]:5000", "unix:/run/x.sock")
    or an HTTP remote ("10.0.0.2"); the port, which differs per connection, is dropped.
    """
    kind, sep, rest = address.partition(":")
    if sep and kind in ("ipv4", "ipv6"):
        address = rest.rsplit(":", 1)[0] if ":" in rest else rest
    return f"{user.name}@{address}"


@dataclass(frozen=True)
class Limits:
    """The limits of one api-server (the flags of the same names); 0: unlimited."""

    max_requests_inflight: int = 400
    max_mutating_requests_inflight: int = 200
    max_watches_per_client: int = 2000
    retry_after: float = 1.0  # seconds a refused client is told to wait


class Limiter:
    """Counts what one api-server serves now and refuses what is over a limit."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.inflight = {READ_ONLY: 0, MUTATING: 0}
        self.watches: dict[str, int] = {}
        self.refused = {READ_ONLY: 0, MUTATING: 0, WATCH: 0}

    def _refuse(self, cls: str, what: str) -> errors.TooManyRequestsError:
        self.refused[cls] += 1
        return errors.TooManyRequestsError(
            f"too many requests: {what}; retry after {self.limits.retry_after:g}s",
            retry_after=self.limits.retry_after)

    @contextmanager
    def admit(self, verb: str, client: str) -> Iterator[None]:
        """Hold a slot for one request of `verb` by `client` while the block runs.

        Raises TooManyRequestsError (with its retry hint) before the block when over a limit.
        """
        cls = verb_class(verb)
        if cls in (READ_ONLY, MUTATING):
            limit = (self.limits.max_requests_inflight if cls == READ_ONLY
                     else self.limits.max_mutating_requests_inflight)
            if limit and self.inflight[cls] >= limit:
                flag = "max-requests-inflight" if cls == READ_ONLY else "max-mutating-requests-inflight"
                raise self._refuse(cls, f"{self.inflight[cls]} {cls} requests in flight (--{flag}={limit})")
            self.inflight[cls] += 1
            try:
                yield
            finally:
                self.inflight[cls] -= 1
        elif cls == WATCH:
            limit = self.limits.max_watches_per_client
            held = self.watches.get(client, 0)
            if limit and held >= limit:
                raise self._refuse(WATCH, f"{client} holds {held} watches (--max-watches-per-client={limit})")
            self.watches[client] = held + 1
            try:
                yield
            finally:
                left = self.watches[client] - 1
                if left:
                    self.watches[client] = left
                else:
                    del self.watches[client]
        else:
            yield

"""Who is making a request: the authenticated user that authorization, admission and the
audit log decide on, whichever way the request came in (gRPC or HTTP, certificate or token).

What must hold:
- One definition of a user for every front end: authenticators produce a `UserInfo`,
  authorizers and admission take one; nothing else describes a caller.
- Names and groups are Kubernetes' own (`system:masters`, `system:nodes`,
  `system:node:<name>`, `system:serviceaccount:<ns>:<name>`, ...), so RBAC objects written for
  Kubernetes mean the same here.
- A certificate maps to a user as in Kubernetes: the subject's CN is the user name, each O is
  a group.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Groups every authenticated or anonymous caller belongs to.
AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
# May do everything (the admin's certificate carries it).
MASTERS = "system:masters"
NODES = "system:nodes"
BOOTSTRAPPERS = "system:bootstrappers"
SERVICE_ACCOUNTS = "system:serviceaccounts"

ANONYMOUS = "system:anonymous"
ADMIN = "kubernetes-admin"
APISERVER = "kube-apiserver"
# The api-server's client identity towards node agents and the store.
APISERVER_CLIENT = "kube-apiserver-kubelet-client"
CONTROLLER_MANAGER = "system:kube-controller-manager"
SCHEDULER = "system:kube-scheduler"
NETPROXY = "system:kube-proxy"
CLUSTERDNS = "system:coredns"

NODE_PREFIX = "system:node:"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
BOOTSTRAP_PREFIX = "system:bootstrap:"


@dataclass(frozen=True)
class UserInfo:
    """An authenticated caller."""

    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())

    def in_group(self, group: str) -> bool:
        return group in self.groups

    @property
    def node_name(self) -> str:
        """The node this user is (`system:node:<name>` in `system:nodes`), or ""."""
        if self.name.startswith(NODE_PREFIX) and NODES in self.groups:
            return self.name[len(NODE_PREFIX):]
        return ""

    @property
    def service_account(self) -> tuple[str, str] | None:
        """(namespace, name) of a service account user, else None."""
        if not self.name.startswith(SERVICE_ACCOUNT_PREFIX):
            return None
        namespace, _, name = self.name[len(SERVICE_ACCOUNT_PREFIX):].partition(":")
        return (namespace, name) if namespace and name else None


def node_user(node_name: str) -> UserInfo:
    return UserInfo(NODE_PREFIX + node_name, (NODES, AUTHENTICATED))


def service_account_user(namespace: str, name: str, uid: str = "") -> UserInfo:
    return UserInfo(f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}",
                    (SERVICE_ACCOUNTS, f"{SERVICE_ACCOUNTS}:{namespace}", AUTHENTICATED), uid=uid)


def from_certificate(common_name: str, organizations: tuple[str, ...]) -> UserInfo:
    """A client certificate's subject as Kubernetes reads it: CN the user, each O a group."""
    return UserInfo(common_name, (*organizations, AUTHENTICATED))


# The caller in development mode (`--insecure`) and of in-process tests: may do everything.
INSECURE_ADMIN = UserInfo(ADMIN, (MASTERS, AUTHENTICATED))

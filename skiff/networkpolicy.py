"""NetworkPolicy facts shared by the api-server (defaults, validation) and the enforcer (netproxy).

What must hold: a policy's effective policyTypes are what Kubernetes defaults them to when
unset — always "Ingress", plus "Egress" when there are egress rules — so a policy stored
before defaulting and one defaulted by the api-server mean the same; a port's protocol is TCP
when unset; a namespace carries the immutable label `kubernetes.io/metadata.name: <name>`
(Kubernetes sets it since 1.21 so that `namespaceSelector` can name one namespace).
"""

from __future__ import annotations

from skiffpb.api.v1 import types_pb2 as t

INGRESS = "Ingress"
EGRESS = "Egress"
POLICY_TYPES = (INGRESS, EGRESS)
DEFAULT_PROTOCOL = "TCP"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def policy_types(spec: t.NetworkPolicySpec) -> tuple[str, ...]:
    """The directions a policy isolates its pods in: the field, or Kubernetes' default for it."""
    if spec.policy_types:
        return tuple(spec.policy_types)
    return (INGRESS, EGRESS) if spec.egress else (INGRESS,)


def port_protocol(port: t.NetworkPolicyPort) -> str:
    return port.protocol if port.HasField("protocol") and port.protocol else DEFAULT_PROTOCOL

"""skiff.identity: certificate subjects and well-known users read as Kubernetes reads them."""

import pytest

from skiff import identity
from skiff.identity import UserInfo


@pytest.mark.parametrize(("user", "node", "service_account"), [
    (identity.node_user("worker-1"), "worker-1", None),
    (UserInfo("system:node:worker-1", ()), "", None),  # the name alone does not make a node
    (identity.service_account_user("web", "builder"), "", ("web", "builder")),
    (UserInfo("system:serviceaccount:web", ()), "", None),
    (identity.INSECURE_ADMIN, "", None),
], ids=["node", "node-name-without-group", "service-account", "service-account-without-name", "admin"])
def test_node_and_service_account_of_a_user(user: UserInfo, node: str, service_account: tuple[str, str] | None) -> None:
    assert user.node_name == node
    assert user.service_account == service_account


def test_certificate_subject_is_user_and_groups() -> None:
    user = identity.from_certificate("alice", ("dev", "ops"))
    assert user.name == "alice"
    assert user.in_group("dev") and user.in_group("ops") and user.in_group(identity.AUTHENTICATED)
    assert not user.in_group(identity.MASTERS)

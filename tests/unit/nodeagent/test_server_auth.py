"""nodeagent/server.py: only the api-server's kubelet-client identity may use logs and exec."""

from __future__ import annotations

import pytest

from nodeagent.server import check_caller
from skiff import errors, identity
from skiff.identity import UserInfo


@pytest.mark.parametrize(("user", "error"), [
    (identity.from_certificate(identity.APISERVER_CLIENT, ()), None),
    (identity.from_certificate(identity.APISERVER_CLIENT, (identity.MASTERS,)), None),
    (identity.node_user("n1"), errors.ForbiddenError),
    (identity.from_certificate(identity.ADMIN, (identity.MASTERS,)), errors.ForbiddenError),
    (identity.from_certificate(identity.APISERVER, ()), errors.ForbiddenError),
    (None, errors.UnauthenticatedError),
], ids=["apiserver-client", "apiserver-client-in-masters", "node", "admin", "apiserver-serving-name", "nobody"])
def test_check_caller(user: UserInfo | None, error: type[Exception] | None) -> None:
    if error is None:
        check_caller(user)
    else:
        with pytest.raises(error):
            check_caller(user)

"""controlplane/store/auth.py: who may call what on the store's client port."""

from __future__ import annotations

import grpc
import pytest

from controlplane.store.auth import decide
from skiff import identity
from skiff.identity import UserInfo
from skiffpb.etcd import rpc_pb2

ADMIN = identity.from_certificate(identity.ADMIN, (identity.MASTERS,))
APISERVER = identity.from_certificate(identity.APISERVER_CLIENT, ())
NODE = identity.node_user("n1")
CM = identity.from_certificate(identity.CONTROLLER_MANAGER, ())
DISARM = rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.DEACTIVATE)
GET_ALARMS = rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET)

OK = None
DENIED = grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(("method", "user", "request_", "code"), [
    ("/etcdserverpb.KV/Range", APISERVER, None, OK),
    ("/etcdserverpb.KV/Txn", APISERVER, None, OK),
    ("/etcdserverpb.Watch/Watch", APISERVER, None, OK),
    ("/etcdserverpb.KV/Compact", APISERVER, None, OK),
    ("/etcdserverpb.Maintenance/Alarm", APISERVER, GET_ALARMS, OK),
    ("/etcdserverpb.Maintenance/Alarm", APISERVER, DISARM, DENIED),
    ("/etcdserverpb.Cluster/MemberAdd", APISERVER, None, DENIED),
    ("/etcdserverpb.Cluster/MemberRemove", APISERVER, None, DENIED),
    ("/etcdserverpb.Maintenance/Defragment", APISERVER, None, DENIED),
    ("/etcdserverpb.Cluster/MemberAdd", ADMIN, None, OK),
    ("/etcdserverpb.Maintenance/Alarm", ADMIN, DISARM, OK),
    ("/etcdserverpb.KV/Compact", ADMIN, None, OK),
    ("/etcdserverpb.KV/Range", NODE, None, DENIED),
    ("/etcdserverpb.KV/Range", CM, None, DENIED),
    ("/etcdserverpb.KV/Range", None, None, grpc.StatusCode.UNAUTHENTICATED),
], ids=["apiserver-range", "apiserver-txn", "apiserver-watch", "apiserver-compact", "apiserver-alarm-list",
        "apiserver-disarm", "apiserver-member-add", "apiserver-member-remove", "apiserver-defragment",
        "admin-member-add", "admin-disarm", "admin-compact", "node-range", "controller-manager-range", "nobody"])
def test_decide(method: str, user: UserInfo | None, request_: object, code: grpc.StatusCode | None) -> None:
    verdict = decide(method, user, request_)
    assert (verdict[0] if verdict else None) == code
    if verdict is not None and user is not None:
        assert verdict[1]  # says why

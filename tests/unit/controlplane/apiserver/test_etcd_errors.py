"""How the etcd backend turns a store's status into a storage error: by code, or by etcd's whole message."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest

from controlplane.apiserver import etcd
from controlplane.apiserver.storage import (
    CompactedError,
    NoSpaceError,
    StoreError,
    StoreOverloadedError,
    UnavailableStoreError,
    ValueTooLargeError,
)
from controlplane.store import errors as store_errors


def status(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details, debug_error_string="")


@pytest.mark.parametrize(
    ("code", "details", "expected"),
    [
        (store_errors.COMPACTED.code, store_errors.COMPACTED.message, CompactedError),
        (grpc.StatusCode.UNKNOWN, etcd.ETCD_COMPACTED, CompactedError),
        (store_errors.REQUEST_TOO_LARGE.code, store_errors.REQUEST_TOO_LARGE.message, ValueTooLargeError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "grpc: received message larger than max", ValueTooLargeError),
        (store_errors.NO_SPACE.code, store_errors.NO_SPACE.message, NoSpaceError),
        (store_errors.TOO_MANY_REQUESTS.code, store_errors.TOO_MANY_REQUESTS.message, StoreOverloadedError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded", UnavailableStoreError),
        (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: key is not provided", StoreError),
        (grpc.StatusCode.INVALID_ARGUMENT, "value too large, or was it compacted?", StoreError),
    ],
    ids=["compacted", "compacted-by-message", "request-too-large", "grpc-size-limit", "nospace-alarm",
         "proposal-queue-full", "outcome-unknown",
         "other", "words-in-a-message-are-not-an-error"],
)
def test_translate(code: grpc.StatusCode, details: str, expected: type[StoreError]) -> None:
    assert type(etcd._translate(status(code, details), "s1:2379")) is expected


def test_the_messages_we_match_are_the_ones_the_store_sends() -> None:
    ours = (etcd.ETCD_COMPACTED, etcd.ETCD_REQUEST_TOO_LARGE, etcd.ETCD_NO_SPACE, etcd.ETCD_TOO_MANY_REQUESTS)
    assert ours == (store_errors.COMPACTED.message, store_errors.REQUEST_TOO_LARGE.message,
                    store_errors.NO_SPACE.message, store_errors.TOO_MANY_REQUESTS.message)

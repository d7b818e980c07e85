"""skiff.errors: statuses back into types, by code and by the reason a server sends beside it."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest

from skiff import errors


def status(code: grpc.StatusCode, details: str, *metadata: tuple[str, str]) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*metadata), details,
                                 debug_error_string="")


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        (status(grpc.StatusCode.NOT_FOUND, "gone"), errors.NotFoundError),
        (status(grpc.StatusCode.ABORTED, "changed"), errors.ConflictError),
        (status(grpc.StatusCode.ABORTED, "bound", (errors.REASON_KEY, "PodAlreadyAssigned")),
         errors.PodAlreadyAssignedError),
        (status(grpc.StatusCode.NOT_FOUND, "gone", (errors.REASON_KEY, "PodAlreadyAssigned")), errors.NotFoundError),
        (status(grpc.StatusCode.ABORTED, "changed", (errors.REASON_KEY, "SomethingNewer")), errors.ConflictError),
        (status(grpc.StatusCode.ABORTED, "pod p is already assigned to node n"), errors.ConflictError),
        (status(grpc.StatusCode.CANCELLED, "cancelled"), errors.SkiffError),
    ],
    ids=["by-code", "conflict", "reason", "reason-not-fitting-the-code", "unknown-reason",
         "message-text-is-not-a-reason", "unmapped-code"],
)
def test_from_grpc(err: grpc.aio.AioRpcError, expected: type[errors.SkiffError]) -> None:
    out = errors.from_grpc(err)
    assert type(out) is expected
    assert out.message == err.details()
    assert out.__cause__ is err


@pytest.mark.parametrize(
    "err",
    [errors.PodAlreadyAssignedError('pod "p" is already assigned to node "n"'), errors.ConflictError("changed"),
     errors.NotFoundError("gone")],
    ids=["with-reason", "parent-without-reason", "plain"],
)
def test_an_error_survives_the_round_trip(err: errors.SkiffError) -> None:
    """What a server sends (code, message, trailing metadata) is rebuilt into the same type."""
    back = errors.from_grpc(status(err.code, err.message, *errors.trailing_metadata(err)))
    assert (type(back), back.message) == (type(err), err.message)
    # The same error as one outcome of a batch (BindBatch): the code by its number, the reason beside it.
    back = errors.from_status(errors.status_code(err.code.value[0]), err.message, err.reason)
    assert (type(back), back.message) == (type(err), err.message)


@pytest.mark.parametrize(("number", "code"), [(0, grpc.StatusCode.OK), (10, grpc.StatusCode.ABORTED),
                                              (999, grpc.StatusCode.UNKNOWN)], ids=["ok", "aborted", "unknown"])
def test_status_code_by_number(number: int, code: grpc.StatusCode) -> None:
    assert errors.status_code(number) is code

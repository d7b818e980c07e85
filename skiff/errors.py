"""One exception hierarchy for every Skiff component, mapped to and from gRPC status codes.

Servers raise these and a single interceptor turns them into statuses; clients turn statuses
back into these, so `except NotFoundError` works the same in a controller and in the CLI.
Messages are written for the user: they name the object, the field or the problem.
"""

from __future__ import annotations

import grpc


class SkiffError(Exception):
    """Base of all Skiff errors. `code` is the gRPC status code it travels as."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidError(SkiffError):
    """Bad input: validation, malformed manifests, oversized objects."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFoundError(SkiffError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(SkiffError):
    code = grpc.StatusCode.ALREADY_EXISTS


class ConflictError(SkiffError):
    """Optimistic concurrency lost: the object changed since it was read."""

    code = grpc.StatusCode.ABORTED


class GoneError(SkiffError):
    """A list or watch asked for a resourceVersion that has been compacted: relist."""

    code = grpc.StatusCode.OUT_OF_RANGE


class UnavailableError(SkiffError):
    """The server or the store behind it cannot answer now; retrying may succeed."""

    code = grpc.StatusCode.UNAVAILABLE


class TimeoutError_(SkiffError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class ForbiddenError(SkiffError):
    code = grpc.StatusCode.PERMISSION_DENIED


class UnauthenticatedError(SkiffError):
    code = grpc.StatusCode.UNAUTHENTICATED


class TooManyRequestsError(SkiffError):
    """A bounded buffer overflowed (a slow watcher) or a rate limit was hit."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class InternalError(SkiffError):
    code = grpc.StatusCode.INTERNAL


class UnimplementedError(SkiffError):
    code = grpc.StatusCode.UNIMPLEMENTED


class FailedPreconditionError(SkiffError):
    code = grpc.StatusCode.FAILED_PRECONDITION


_BY_CODE: dict[grpc.StatusCode, type[SkiffError]] = {
    cls.code: cls
    for cls in (
        InvalidError,
        NotFoundError,
        AlreadyExistsError,
        ConflictError,
        GoneError,
        UnavailableError,
        TimeoutError_,
        ForbiddenError,
        UnauthenticatedError,
        TooManyRequestsError,
        InternalError,
        UnimplementedError,
        FailedPreconditionError,
    )
}


def from_grpc(err: grpc.RpcError) -> SkiffError:
    """The SkiffError for a failed call; the original error is kept as the cause."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    cls = _BY_CODE.get(code, SkiffError)
    out = cls(details or code.name.lower())
    out.__cause__ = err
    return out

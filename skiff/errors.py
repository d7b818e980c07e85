"""One exception hierarchy for every Skiff component, mapped to and from gRPC status codes.

Servers raise these and a single interceptor turns them into statuses; clients turn statuses
back into these, so `except NotFoundError` works the same in a controller and in the CLI.
Messages are written for the user: they name the object, the field or the problem.

What must hold:
- callers tell errors apart by type, never by the text of their message;
- a subclass that shares its parent's status code (PodAlreadyAssignedError is a conflict) has
  a `reason`; it travels in the trailing metadata key `skiff-reason` (Kubernetes' Status
  reason) and `from_grpc` turns it back into that subclass. A status without a known reason
  becomes the class of its code, so older servers still map to the parent type.
"""

from __future__ import annotations

from typing import Any

import grpc

REASON_KEY = "skiff-reason"
RETRY_AFTER_KEY = "retry-after"


class SkiffError(Exception):
    """Base of all Skiff errors. `code` is the gRPC status code it travels as; `reason`, if set,
    names a subclass that shares that code."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    reason: str = ""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidError(SkiffError):
    """Bad input: validation, malformed manifests, oversized objects. `causes` names each bad
    field as (JSON path, problem) when known (Kubernetes' Status causes over HTTP)."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, message: str, *, causes: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.causes = causes


class NotFoundError(SkiffError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(SkiffError):
    code = grpc.StatusCode.ALREADY_EXISTS


class ConflictError(SkiffError):
    """Optimistic concurrency lost: the object changed since it was read."""

    code = grpc.StatusCode.ABORTED


class PodAlreadyAssignedError(ConflictError):
    """A binding lost to another: the pod is already bound to a node (someone else scheduled it)."""

    reason = "PodAlreadyAssigned"


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
    """A bounded buffer overflowed (a slow watcher) or a limit was hit. `retry_after`, when
    set, is how many seconds the server asks the client to wait before trying again; it travels
    in the trailing metadata key `retry-after` (and as HTTP's Retry-After header)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


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


_BY_REASON: dict[str, type[SkiffError]] = {cls.reason: cls for cls in (PodAlreadyAssignedError,)}


def trailing_metadata(err: SkiffError) -> tuple[tuple[str, str], ...]:
    """What a server sends beside the status so the client can rebuild `err`'s type (and its
    retry hint)."""
    out: tuple[tuple[str, str], ...] = ((REASON_KEY, err.reason),) if err.reason else ()
    hint = getattr(err, "retry_after", None)
    if hint is not None:
        out += ((RETRY_AFTER_KEY, f"{hint:g}"),)
    return out


def _metadata(err: grpc.RpcError, wanted: str) -> str:
    # (key, value) pairs at run time; the stubs type them as an opaque `_Metadatum`.
    metadata: Any = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
    for key, value in metadata or ():
        if key == wanted:
            return value.decode() if isinstance(value, bytes) else str(value)
    return ""


def _reason(err: grpc.RpcError) -> str:
    return _metadata(err, REASON_KEY)


def retry_after(err: grpc.RpcError) -> float | None:
    """The server's retry hint of a failed call in seconds (None: none, or not a number >= 0)."""
    text = _metadata(err, RETRY_AFTER_KEY)
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0 <= value < float("inf") else None


def from_grpc(err: grpc.RpcError) -> SkiffError:
    """The SkiffError for a failed call; the original error is kept as the cause."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    out = from_status(code, details or "", _reason(err))
    if isinstance(out, TooManyRequestsError):
        out.retry_after = retry_after(err)
    out.__cause__ = err
    return out


def from_status(code: grpc.StatusCode, message: str, reason: str = "") -> SkiffError:
    """The SkiffError a status code, message and skiff-reason travel as (a failed call, or one
    outcome of a batch: BindBatch)."""
    cls = _BY_REASON.get(reason) or _BY_CODE.get(code, SkiffError)
    if cls.code != code:  # a reason that does not fit the code is not believed
        cls = _BY_CODE.get(code, SkiffError)
    return cls(message or code.name.lower())


_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def status_code(number: int) -> grpc.StatusCode:
    """The gRPC status code of its number on the wire (UNKNOWN for a number it does not know)."""
    return _BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)

"""Skiff errors as Kubernetes `metav1.Status` objects with the HTTP code and reason kubectl expects.

What must hold: every skiff.errors class maps to one (HTTP code, reason); an InvalidError with
field causes is 422 Invalid with one cause per field (`FieldValueInvalid`, field = JSON path);
the details name the resource (`kind` is the resource's plural, as Kubernetes puts it) and the
object when known.
"""

from __future__ import annotations

from typing import Any

from skiff import errors

# class -> (HTTP code, Kubernetes reason); subclasses before their parents.
_MAPPING: tuple[tuple[type[errors.SkiffError], int, str], ...] = (
    (errors.NotFoundError, 404, "NotFound"),
    (errors.AlreadyExistsError, 409, "AlreadyExists"),
    (errors.ConflictError, 409, "Conflict"),
    (errors.InvalidError, 422, "Invalid"),
    (errors.GoneError, 410, "Expired"),
    (errors.UnavailableError, 503, "ServiceUnavailable"),
    (errors.TimeoutError_, 504, "Timeout"),
    (errors.ForbiddenError, 403, "Forbidden"),
    (errors.UnauthenticatedError, 401, "Unauthorized"),
    (errors.TooManyRequestsError, 429, "TooManyRequests"),
    (errors.UnimplementedError, 405, "MethodNotAllowed"),
    (errors.FailedPreconditionError, 400, "BadRequest"),
    (errors.InternalError, 500, "InternalError"),
)


class BadRequest(errors.SkiffError):
    """A request the HTTP layer cannot read (bad JSON, a path that names nothing): 400 BadRequest."""


class UnsupportedMediaType(errors.SkiffError):
    """A body or patch type not served (server-side apply, protobuf): 415."""


class FieldManagerConflict(errors.ConflictError):
    """A server-side apply that would take fields another manager owns: 409 Conflict with one
    `FieldManagerConflict` cause per field, naming the field and its manager."""

    def __init__(self, message: str, *, conflicts: tuple[tuple[str, str], ...]) -> None:
        super().__init__(message)
        self.conflicts = conflicts  # (field, manager)


class NotAcceptable(errors.SkiffError):
    """An Accept header naming only formats not served: 406."""


_HTTP_ONLY: tuple[tuple[type[errors.SkiffError], int, str], ...] = (
    (BadRequest, 400, "BadRequest"),
    (UnsupportedMediaType, 415, "UnsupportedMediaType"),
    (NotAcceptable, 406, "NotAcceptable"),
)


def code_and_reason(exc: errors.SkiffError) -> tuple[int, str]:
    for cls, code, reason in (*_HTTP_ONLY, *_MAPPING):
        if isinstance(exc, cls):
            return code, reason
    return 500, "InternalError"


def status(exc: errors.SkiffError, *, resource: str = "", group: str = "",
           name: str = "") -> tuple[int, dict[str, Any]]:
    """(HTTP code, Status object) for `exc`."""
    code, reason = code_and_reason(exc)
    out: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                           "message": exc.message, "reason": reason, "code": code}
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    if resource:
        details["kind"] = resource
    hint = getattr(exc, "retry_after", None)
    if hint is not None:
        details["retryAfterSeconds"] = retry_after_seconds(hint)
    causes = getattr(exc, "causes", ())
    if causes:
        details["causes"] = [{"reason": "FieldValueInvalid", "message": problem, "field": path}
                             for path, problem in causes]
    if isinstance(exc, FieldManagerConflict):
        details["causes"] = [{"reason": "FieldManagerConflict", "message": f'conflict with "{manager}"',
                              "field": field} for field, manager in exc.conflicts]
    if details:
        out["details"] = details
    return code, out


def retry_after_seconds(hint: float) -> int:
    """HTTP's Retry-After is whole seconds: a hint below one second rounds up to 1."""
    return max(1, int(-(-hint // 1)))


def headers(exc: errors.SkiffError) -> dict[str, str]:
    """Headers of an error response: Retry-After for a refusal that carries a retry hint."""
    hint = getattr(exc, "retry_after", None)
    return {} if hint is None else {"Retry-After": str(retry_after_seconds(hint))}


def success(*, resource: str, group: str, name: str, uid: str = "") -> dict[str, Any]:
    """The Status a delete returns once the object is gone."""
    details: dict[str, Any] = {"name": name, "kind": resource}
    if group:
        details["group"] = group
    if uid:
        details["uid"] = uid
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}

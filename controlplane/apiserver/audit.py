"""The audit log: one JSON line per mutating request (who, verb, object, verdict, time), written
through the logging library's size rotation (`--audit-log-path`, `--audit-log-maxsize` in MB,
`--audit-log-maxbackup` files kept).

What must hold: a line is one complete JSON object (`audit_line` is pure and tested); the file
rotates at the size limit and keeps at most `max_backups` old files; the audit logger never
propagates into the api-server's own log.
"""

from __future__ import annotations

import datetime
import json
import logging
import logging.handlers
import os
from typing import Any

from controlplane.apiserver.rbac import Attributes
from skiff.identity import UserInfo

DEFAULT_MAX_SIZE_MB = 100
DEFAULT_MAX_BACKUPS = 10


def audit_line(user: UserInfo, attrs: Attributes, allowed: bool, reason: str, *, now: float,
               impersonator: UserInfo | None = None) -> str:
    stamp = datetime.datetime.fromtimestamp(now, datetime.UTC).isoformat(timespec="microseconds")
    data: dict[str, Any] = {"time": stamp.replace("+00:00", "Z"), "user": user.name, "groups": list(user.groups)}
    if impersonator is not None:
        data["impersonatedBy"] = impersonator.name
    data["verb"] = attrs.verb
    if attrs.resource_request:
        data.update(apiGroup=attrs.group, resource=attrs.resource)
        if attrs.subresource:
            data["subresource"] = attrs.subresource
        if attrs.namespace:
            data["namespace"] = attrs.namespace
        if attrs.name:
            data["name"] = attrs.name
    else:
        data["path"] = attrs.path
    data["verdict"] = "allow" if allowed else "deny"
    if reason:
        data["reason"] = reason
    return json.dumps(data, separators=(",", ":"))


class AuditLog:
    def __init__(self, path: str, *, max_size_mb: float = DEFAULT_MAX_SIZE_MB,
                 max_backups: int = DEFAULT_MAX_BACKUPS) -> None:
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
        self._handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=int(max_size_mb * 1024 * 1024), backupCount=max_backups, encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self._log = logging.getLogger(f"skiff.audit.{id(self)}")
        self._log.propagate = False
        self._log.setLevel(logging.INFO)
        self._log.addHandler(self._handler)

    def record(self, user: UserInfo, attrs: Attributes, allowed: bool, reason: str, *, now: float,
               impersonator: UserInfo | None = None) -> None:
        self._log.info(audit_line(user, attrs, allowed, reason, now=now, impersonator=impersonator))

    def close(self) -> None:
        self._log.removeHandler(self._handler)
        self._handler.close()

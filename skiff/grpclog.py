"""grpc.aio's log record that reports an ordinary outcome as an error, made quiet and counted.

When a unary call ends in gRPC's core (the client's deadline passed, or the client went away)
while its handler is still running, the client already has its answer (DEADLINE_EXCEEDED,
CANCELLED). If the handler then returns before grpc.aio has noticed, sending its late answer
fails, and grpc.aio's server logs that at ERROR with a traceback: "ExecuteBatchError raised in
core by servicer method [/skiff.api.v1.ApiServer/UpdateStatus]". On a loaded api-server that is
one traceback per late answer, about nothing that is wrong with the server and nothing anyone
can still do for that client. `quiet_undelivered()` turns each such record into one debug line
and a count in `grpc_server_undelivered_responses_total{grpc_method}`.

What must hold: only that record is touched (grpc's logger, that message); every other record
of grpc's passes unchanged.
"""

from __future__ import annotations

import logging
import re

from prometheus_client import Counter

GRPC_LOGGER = "grpc._cython.cygrpc"  # grpc.aio's server logs through this logger
_UNDELIVERED = re.compile(r"ExecuteBatchError raised in core by servicer method \[(?P<method>[^\]]*)\]")

UNDELIVERED = Counter("grpc_server_undelivered_responses",
                      "Answers a gRPC server could not send because the call had already ended in gRPC's "
                      "core (the client's deadline passed or the client went away) while its handler ran.",
                      ["grpc_method"])

log = logging.getLogger("skiff.grpc")


class UndeliveredFilter(logging.Filter):
    """Drops grpc.aio's "ExecuteBatchError raised in core" record, counting it and logging it at debug."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != GRPC_LOGGER:
            return True
        found = _UNDELIVERED.match(record.getMessage())
        if found is None:
            return True
        method = found["method"]
        UNDELIVERED.labels(method).inc()
        log.debug("answer to %s not delivered: the call had ended (the client's deadline passed or it went away)",
                  method)
        return False


def quiet_undelivered() -> None:
    """Install `UndeliveredFilter` on grpc.aio's logger (once, however often called)."""
    logger = logging.getLogger(GRPC_LOGGER)
    if not any(isinstance(f, UndeliveredFilter) for f in logger.filters):
        logger.addFilter(UndeliveredFilter())

"""grpc.aio's "ExecuteBatchError raised in core" record: dropped, counted and logged at debug; nothing else touched."""

from __future__ import annotations

import logging
import sys

import pytest

from skiff import grpclog

_METHOD = "/skiff.api.v1.ApiServer/UpdateStatus"


def _record(name: str, msg: str) -> logging.LogRecord:
    try:
        raise RuntimeError("Failed \"execute_batch\"")
    except RuntimeError:
        exc_info = sys.exc_info()
    return logging.LogRecord(name, logging.ERROR, "server.pyx.pxi", 710, msg, None, exc_info)


def _count(method: str) -> float:
    return grpclog.UNDELIVERED.labels(method)._value.get()


@pytest.mark.parametrize(("name", "msg", "dropped"), [
    (grpclog.GRPC_LOGGER, f"ExecuteBatchError raised in core by servicer method [{_METHOD}]", True),
    (grpclog.GRPC_LOGGER, f"Unexpected [RuntimeError] raised by servicer method [{_METHOD}]", False),
    (grpclog.GRPC_LOGGER, "Using AsyncIOEngine.POLLER as I/O engine", False),
    ("skiff.apiserver", f"ExecuteBatchError raised in core by servicer method [{_METHOD}]", False),
], ids=["late-answer-dropped", "handler-error-kept", "other-grpc-record-kept", "other-logger-kept"])
def test_only_the_undelivered_answer_is_quieted(name: str, msg: str, dropped: bool,
                                                caplog: pytest.LogCaptureFixture) -> None:
    before = _count(_METHOD)
    with caplog.at_level(logging.DEBUG, logger="skiff.grpc"):
        kept = grpclog.UndeliveredFilter().filter(_record(name, msg))
    assert kept is not dropped
    assert _count(_METHOD) == before + (1 if dropped else 0)
    debug = [r for r in caplog.records if r.name == "skiff.grpc"]
    assert len(debug) == (1 if dropped else 0)
    assert all(r.levelno == logging.DEBUG and _METHOD in r.getMessage() for r in debug)


def test_installed_once_on_grpcs_logger(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger(grpclog.GRPC_LOGGER)
    grpclog.quiet_undelivered()
    grpclog.quiet_undelivered()
    assert sum(isinstance(f, grpclog.UndeliveredFilter) for f in logger.filters) == 1
    before = _count("/t.S/M")
    with caplog.at_level(logging.DEBUG):
        logger.error("ExecuteBatchError raised in core by servicer method [%s]", "/t.S/M")
        logger.error("Unexpected [KeyError] raised by servicer method [%s]", "/t.S/M")
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["Unexpected [KeyError] raised by servicer method [/t.S/M]"]
    assert _count("/t.S/M") == before + 1

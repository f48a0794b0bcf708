"""Errors that carry a status, understood by every transport."""

from __future__ import annotations

import asyncio
import enum
import logging

log = logging.getLogger("blazerpc")


class Status(enum.IntEnum):
    """gRPC status codes (the numbering is the gRPC one)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS[self]


_HTTP_STATUS = {
    Status.OK: 200,
    Status.CANCELLED: 499,
    Status.UNKNOWN: 500,
    Status.INVALID_ARGUMENT: 422,  # as FastAPI answers a body that fails validation
    Status.DEADLINE_EXCEEDED: 504,
    Status.NOT_FOUND: 404,
    Status.ALREADY_EXISTS: 409,
    Status.PERMISSION_DENIED: 403,
    Status.RESOURCE_EXHAUSTED: 429,
    Status.FAILED_PRECONDITION: 400,
    Status.ABORTED: 409,
    Status.OUT_OF_RANGE: 400,
    Status.UNIMPLEMENTED: 501,
    Status.INTERNAL: 500,
    Status.UNAVAILABLE: 503,
    Status.DATA_LOSS: 500,
    Status.UNAUTHENTICATED: 401,
}


# The status an HTTP answer stands for: the map above, read backwards, with the codes only the
# HTTP side uses (400 a bad request, 405 wrong method, 408 body stalled, 413 and 431 too large).
_STATUS_OF_CODE = {code: status for status, code in reversed(_HTTP_STATUS.items())} | {
    400: Status.INVALID_ARGUMENT,
    405: Status.UNIMPLEMENTED,
    408: Status.DEADLINE_EXCEEDED,
    413: Status.RESOURCE_EXHAUSTED,
    431: Status.RESOURCE_EXHAUSTED,
    500: Status.INTERNAL,
}


def status_for_http(code: int) -> Status:
    """The status an HTTP answer's code stands for (any 2xx or 3xx is OK)."""
    if code < 400:
        return Status.OK
    return _STATUS_OF_CODE.get(code, Status.INTERNAL if code >= 500 else Status.FAILED_PRECONDITION)


class BlazeError(Exception):
    """An expected error with a status; raise it from a model to fail one request.

    ``BlazeError(Status.NOT_FOUND, "no such user")`` reaches a gRPC client as
    NOT_FOUND and an HTTP client as 404, with the message unchanged.
    """

    def __init__(
        self, status: Status, message: str, *, param: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = Status(status)
        self.message = message
        self.param = param  # the request field at fault, where there is one
        self.retry_after = retry_after  # seconds; sent as HTTP ``Retry-After`` where given

    def __repr__(self) -> str:
        return f"BlazeError({self.status.name}, {self.message!r})"


class InvalidArgument(BlazeError):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(Status.INVALID_ARGUMENT, message, param=param)


def status_of(exc: BaseException, what: str) -> BlazeError:
    """The one error boundary: any exception as a ``BlazeError`` a transport can send.

    A ``BlazeError`` passes as it is; cancellation at shutdown is UNAVAILABLE; anything else
    is a bug in ``what`` (e.g. "model 'echo'"): logged here once with its traceback, and
    INTERNAL with a one-line message for the client.
    """
    if isinstance(exc, BlazeError):
        return exc
    if isinstance(exc, asyncio.CancelledError):
        return BlazeError(Status.UNAVAILABLE, "server shut down before the call finished")
    log.error("%s failed", what, exc_info=exc)
    return BlazeError(Status.INTERNAL, f"{what} failed: {short_error(exc)}")


def shorten(text: str, limit: int = 64) -> str:
    """``text``, or its first ``limit`` characters and its length: how an error quotes a client's value."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def short_error(exc: BaseException, limit: int = 200) -> str:
    """A one-line description of an unexpected exception, safe to send to a client."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."

"""uvicorn's HTTP/1.1 protocol (httptools), within the connection budget and a request-head size limit.

uvicorn bounds neither: it accepted sockets until the process ran out of file descriptors, and
kept a header of any size in memory while it arrived (20 connections sending 50 MB each took
the server from 279 to 1,259 MB).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..connections import ConnectionBudget
from ..errors import BlazeError, Status
from .errors import blaze_error_body


class GuardedHttpProtocol(HttpToolsProtocol):
    """One HTTP connection: counted in ``budget``; a request head over ``max_head_bytes`` gets 431."""

    def __init__(
        self,
        *args: Any,
        budget: ConnectionBudget,
        idle_timeout_s: float,
        max_head_bytes: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.budget = budget
        self.idle_timeout_s = idle_timeout_s
        self.max_head_bytes = max_head_bytes
        self.head_bytes = 0
        self.head_pending = True  # bytes that arrive now belong to a request head

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.budget.admit(self, transport):
            self._refuse(503, "Service Unavailable", BlazeError(Status.UNAVAILABLE, "too many open connections"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.budget.release(self)
        super().connection_lost(exc)

    def busy(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def close(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.head_pending:
            self.head_bytes += len(data)
        super().data_received(data)
        if self.head_pending and self.head_bytes > self.max_head_bytes and not self.transport.is_closing():
            message = f"the request line and headers are larger than {self.max_head_bytes} bytes"
            self._refuse(431, "Request Header Fields Too Large", BlazeError(Status.INVALID_ARGUMENT, message))

    def on_headers_complete(self) -> None:
        self.head_pending, self.head_bytes = False, 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.head_pending = True  # the next request's head may follow
        super().on_message_complete()

    def _refuse(self, status: int, reason: str, error: BlazeError) -> None:
        body = json.dumps(blaze_error_body(error)).encode()
        head = (
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self.transport.close()

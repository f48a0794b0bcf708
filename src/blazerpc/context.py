"""``Context``: one call as its model function and the middleware see it, on either transport.

A model function that declares a parameter annotated ``Context`` gets the call's context (the
parameter is not part of the request schema). The same object goes to every middleware's
``before`` and ``after``, and is the current context for the call's task (``current_context()``),
which is how log lines of the call get its request id.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import logging
import random
import re
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal

from .errors import BlazeError, Status

log = logging.getLogger("blazerpc")

Transport = Literal["grpc", "http"]
REQUEST_ID = "x-request-id"

#: The call the running task serves; copied into its child tasks and into the model's worker threads.
CURRENT: contextvars.ContextVar[Context | None] = contextvars.ContextVar("blazerpc_context", default=None)

# An incoming id is used only if it is short visible ASCII: it goes into log lines and headers as is.
_ACCEPTABLE_ID = re.compile(r"[!-~]{1,128}")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")
_RESERVED = frozenset({"content-type", "content-length", "te", "transfer-encoding", "connection", "user-agent"})
_EMPTY: Mapping[str, str] = MappingProxyType({})


def current_context() -> Context | None:
    """The context of the call this task (or worker thread) serves, or None outside a call."""
    return CURRENT.get()


def record_error(error: BlazeError) -> None:
    """Tell the current call (if any) the error its client is told: ``after`` middleware read it."""
    context = CURRENT.get()
    if context is not None:
        context.error = error


def new_request_id(incoming: str | None = None) -> str:
    """``incoming`` if it is an acceptable id (1-128 visible ASCII characters), else a fresh one."""
    if incoming is not None and _ACCEPTABLE_ID.fullmatch(incoming):
        return incoming
    # 64 random bits: unique enough to find one call's log lines, and short: over gRPC both ends
    # Huffman-code it on every call, in pure Python (see grpc/calls.py for what that costs).
    return f"{random.getrandbits(64):016x}"


class Context:
    """One call: who asked for what, its deadline, and what it sends back besides the answer.

    - ``request_id``: the caller's ``x-request-id`` or a new one; sent back as the ``x-request-id``
      response header (gRPC: initial metadata) and present in every log line of the call.
    - ``transport``: ``"grpc"`` or ``"http"``; ``method``: ``"/blazerpc.InferenceService/PredictEcho"``
      or ``"POST /echo"``; ``path``: the gRPC method path or the URL path; ``model``: the model
      called, where the call reached one.
    - ``metadata``: HTTP headers or gRPC invocation metadata, read-only, lower-case keys.
    - ``peer``: ``"host:port"`` of the client; ``deadline`` (``time.monotonic()`` time or None,
      gRPC only) and ``time_remaining()``; ``cancelled``: the client went away, the deadline
      passed or the server shut down before the call finished.
    - ``state``: a dict for middleware to leave things for the function (the caller's identity).
    - ``set_header(name, value)``: an HTTP response header or gRPC trailing metadata.

    Once the call ends, ``after`` middleware read its outcome: ``status``, ``http_status``
    (HTTP), ``error``, ``messages`` (messages or events a stream sent) and ``duration_s``.
    """

    __slots__ = (
        "_cancelled",
        "_headers",
        "_metadata",
        "_peer",
        "_raw_metadata",
        "_state",
        "_task",
        "deadline",
        "duration_s",
        "error",
        "http_status",
        "messages",
        "method",
        "model",
        "path",
        "request_id",
        "started",
        "status",
        "streaming",
        "transport",
    )

    def __init__(
        self,
        transport: Transport,
        method: str,
        path: str,
        request_id: str,
        *,
        raw_metadata: Any = None,
        peer: Any = None,
        deadline: float | None = None,
        model: str | None = None,
        streaming: bool = False,
    ) -> None:
        self.transport = transport
        self.method = method
        self.path = path
        self.request_id = request_id
        self.model = model
        self.deadline = deadline
        self.streaming = streaming
        self.started = time.perf_counter()
        self.status = Status.OK
        self.http_status: int | None = None
        self.error: BlazeError | None = None
        self.messages = 0
        self.duration_s = 0.0
        # Built on first use: most calls never read their metadata or peer.
        self._raw_metadata = raw_metadata
        self._metadata: Mapping[str, str] | None = None
        self._peer = peer
        self._state: dict[str, Any] | None = None
        self._headers: list[tuple[str, str]] | None = None
        self._cancelled = False
        self._task = _running_task()

    def __repr__(self) -> str:
        return f"Context({self.transport} {self.method}, request_id={self.request_id!r})"

    @property
    def metadata(self) -> Mapping[str, str]:
        if self._metadata is None:
            self._metadata = _read_metadata(self.transport, self._raw_metadata)
        return self._metadata

    @property
    def peer(self) -> str | None:
        addr = self._peer.addr() if self.transport == "grpc" and self._peer is not None else self._peer
        if not addr:
            return None
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def state(self) -> dict[str, Any]:
        if self._state is None:
            self._state = {}
        return self._state

    def time_remaining(self) -> float | None:
        """Seconds until the deadline (0 once it passed), or None without one."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    @property
    def cancelled(self) -> bool:
        """True once the call is cancelled: a sync function in a worker thread may poll it to stop early."""
        if self._cancelled:
            return True
        if self._task is not None and self._task.cancelling():
            return True
        return self.deadline is not None and time.monotonic() >= self.deadline

    def cancel(self) -> None:
        """Mark the call cancelled (the transport does, when the client goes away)."""
        self._cancelled = True

    def set_header(self, name: str, value: str) -> None:
        """Send ``name: value`` back: an HTTP response header (set it before a stream's first chunk),
        or gRPC trailing metadata. ``name`` is lower-cased."""
        name = name.lower()
        if not _HEADER_NAME.fullmatch(name) or name.startswith("grpc-") or name in _RESERVED or name == REQUEST_ID:
            raise ValueError(f"{name!r} cannot be set as a response header; use a plain name such as 'x-model-version'")
        if not value.isprintable() or not value.isascii():
            raise ValueError(f"the value of response header {name!r} must be printable ASCII")
        if self.transport == "http" and self.http_status is not None:
            log.warning("response header %r set after the answer started; it is not sent", name)
            return
        if self._headers is None:
            self._headers = []
        self._headers.append((name, value))

    @property
    def response_headers(self) -> list[tuple[str, str]]:
        """What ``set_header`` was given, in order."""
        return self._headers or []

    def finish(self, status: Status | None = None) -> None:
        """Close the books: duration, the final status, whether it was cancelled."""
        self.duration_s = time.perf_counter() - self.started
        if status is not None:
            self.status = status
        elif self.error is not None:
            self.status = self.error.status
        self._cancelled = self.cancelled
        self._task = None  # the task refers to this context through its frames: no cycle to outlive it


def _running_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # made outside an event loop (a test, a script)
        return None


def _read_metadata(transport: Transport, raw: Any) -> Mapping[str, str]:
    if raw is None:
        return _EMPTY
    values: dict[str, str] = {}
    if transport == "http":  # ASGI headers: lower-case byte names and byte values
        for name, value in raw:
            key, text = name.decode("latin-1"), value.decode("latin-1")
            values[key] = f"{values[key]}, {text}" if key in values else text
    else:  # grpclib's MultiDict; "-bin" values are bytes, shown as the base64 of the wire
        for key, value in raw.items():
            text = base64.b64encode(value).decode() if isinstance(value, bytes) else value
            values[key] = f"{values[key]}, {text}" if key in values else text
    return MappingProxyType(values)

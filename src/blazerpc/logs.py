"""Logging: the call's request id in every log line, and the access log (one line per call).

``blaze serve`` and ``blaze llm`` log as ``FORMAT``. An app that configures logging itself adds
``RequestIdFilter()`` to its handlers and ``%(request_id)s`` to its format.
"""

from __future__ import annotations

import logging

from .context import CURRENT, Context
from .errors import Status
from .middleware import Middleware

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


class RequestIdFilter(logging.Filter):
    """Sets ``record.request_id``: the id of the call being served where the record was made, else "-"."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            context = CURRENT.get()
            record.request_id = context.request_id if context is not None else "-"
        return True


def configure_logging(level: str = "info") -> None:
    """Log to stderr as ``FORMAT`` (unless logging is configured already), request ids included."""
    logging.basicConfig(level=level.upper(), format=FORMAT)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
            handler.addFilter(RequestIdFilter())


class AccessLog(Middleware):
    """One INFO line per call on the ``blazerpc.access`` logger, e.g.
    ``http POST /generate 200 812.4ms 31 msgs`` or ``grpc /blazerpc.InferenceService/PredictEcho OK 0.6ms``.

    HTTP shows the status code, followed by the call's status where the answer started well and
    the call still failed (``200 CANCELLED``: the client left mid-stream); gRPC shows the status.
    Streams add the count of messages (gRPC) or events (SSE, ``[DONE]`` not counted) they sent.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or logging.getLogger("blazerpc.access")

    def after(self, ctx: Context) -> None:
        if not self.log.isEnabledFor(logging.INFO):
            return
        if ctx.transport == "http":
            code = ctx.http_status or ctx.status.http_status
            status = str(code) if ctx.status is Status.OK or code >= 400 else f"{code} {ctx.status.name}"
        else:
            status = ctx.status.name
        streamed = f" {ctx.messages} msgs" if ctx.streaming else ""
        # makeRecord + handle is what ``info`` does, less the walk up the stack for the caller's
        # file and line (a third of the line's cost; they would only ever name this method).
        args = (ctx.transport, ctx.method, status, ctx.duration_s * 1000, streamed)
        record = self.log.makeRecord(self.log.name, logging.INFO, __file__, 0, _LINE, args, None, "after")
        record.request_id = ctx.request_id
        self.log.handle(record)


_LINE = "%s %s %s %.1fms%s"

"""Errors as HTTP answers: the status code, ``Retry-After``, and a body in the route's own shape.

Every error a route answers passes through ``error_response``: a ``BlazeError`` from a model or
the engine, a body that fails validation (its value is never echoed back in bulk), a body too
large, a request refused while draining. Routers added with an ``error_body`` (the OpenAI
routes) get their errors in that shape under their prefix; other routes get ``blaze_error_body``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from ..app import ErrorBody
from ..context import record_error
from ..errors import BlazeError, Status, shorten, status_of


def blaze_error_body(error: BlazeError) -> dict[str, Any]:
    """``{"error": {"status", "code", "message"}}``; a bad field is reported as FastAPI reports one."""
    if error.status is Status.INVALID_ARGUMENT and error.param is not None:
        return {"detail": [{"type": "value_error", "loc": ["body", error.param], "msg": error.message}]}
    return {"error": {"status": error.status.name, "code": int(error.status), "message": error.message}}


class ErrorResponder:
    """Picks the error body by path prefix and builds the response."""

    def __init__(self, bodies: Mapping[str, ErrorBody]) -> None:
        self.bodies = sorted(bodies.items(), key=lambda item: -len(item[0]))  # longest prefix first

    def body_for(self, path: str) -> ErrorBody:
        for prefix, body in self.bodies:
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return body
        return blaze_error_body

    def response(self, path: str, error: BlazeError, status_code: int | None = None) -> JSONResponse:
        record_error(error)
        headers = {}
        if error.retry_after is not None:
            headers["Retry-After"] = str(max(1, round(error.retry_after)))
        if error.status is Status.UNAUTHENTICATED:
            headers["WWW-Authenticate"] = "Bearer"  # a 401 must say which scheme it wants (RFC 9110)
        return JSONResponse(
            self.body_for(path)(error), status_code=status_code or error.status.http_status, headers=headers
        )

    def install(self, api: FastAPI) -> None:
        """Exception handlers for ``BlazeError``, validation errors and anything unexpected."""

        async def on_blaze_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, BlazeError)
            return self.response(request.url.path, exc)

        async def on_validation_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, RequestValidationError)
            body = self.body_for(request.url.path)
            if body is blaze_error_body:  # FastAPI's own shape, minus the bulk of the input
                return JSONResponse({"detail": [short_detail(e) for e in exc.errors()]}, status_code=422)
            return self.response(request.url.path, validation_error(exc))

        async def on_unexpected(request: Request, exc: Exception) -> Response:
            return self.response(request.url.path, status_of(exc, f"{request.method} {request.url.path}"))

        api.add_exception_handler(BlazeError, on_blaze_error)
        api.add_exception_handler(RequestValidationError, on_validation_error)
        api.add_exception_handler(Exception, on_unexpected)  # a JSON 500 (Starlette's is plain text)


def validation_error(exc: RequestValidationError) -> BlazeError:
    """Every problem in one sentence, the first bad field as ``param``."""
    problems = [(".".join(str(p) for p in e["loc"][1:]), str(e["msg"])) for e in exc.errors()]
    message = "; ".join(f"{field}: {msg}" if field else msg for field, msg in problems)
    return BlazeError(Status.INVALID_ARGUMENT, shorten(message, 1000), param=problems[0][0] if problems else None)


def short_detail(error: Mapping[str, Any]) -> dict[str, Any]:
    """One pydantic error as FastAPI reports it, with the offending value cut to a short prefix."""
    detail = {key: error[key] for key in ("type", "loc", "msg") if key in error}
    detail["msg"] = shorten(str(detail.get("msg", "")), 1000)
    value = error.get("input")
    if value is None or isinstance(value, (bool, int, float)):
        detail["input"] = value
    elif isinstance(value, str):
        detail["input"] = shorten(value)
    return detail

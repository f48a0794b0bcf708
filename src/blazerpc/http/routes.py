"""The FastAPI app: one ``POST /<model>`` per registered model, plus health and listing.

With API keys, its OpenAPI schema declares them: a bearer scheme, on every operation that needs one.
"""

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, create_model

from .. import __version__
from ..app import BlazeApp
from ..auth import ApiKeyAuth
from ..context import CURRENT, Context, new_request_id
from ..errors import BlazeError, Status, status_of
from ..lifecycle import Lifecycle
from ..registry import ModelInfo
from ..runtime import Runtime
from .calls import PROBES
from .errors import ErrorResponder, blaze_error_body
from .schemas import ErrorBody, request_model, response_model, result_json
from .sse import EventStream, model_events

log = logging.getLogger("blazerpc.http")

Invoke = Callable[[ModelInfo, dict[str, Any]], Awaitable[Any]]
BEARER = "apiKey"  # the name of the security scheme in the OpenAPI schema
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (413, 429, 500, 503, 504)}


def build_api(app: BlazeApp, runtime: Runtime, lifecycle: Lifecycle, invoke: Invoke, errors: ErrorResponder) -> FastAPI:
    api = FastAPI(
        title=app.name,
        version=__version__,
        description="Models served by blazerpc. Streaming models answer Server-Sent Events "
        'when the body has `"stream": true` or the request accepts `text/event-stream`.',
    )

    errors.install(api)

    @api.get("/health", tags=["health"])
    async def health() -> dict[str, str]:
        """Liveness: 200 while the process serves."""
        return {"status": "ok"}

    @api.get("/ready", tags=["health"], responses={503: {"model": ErrorBody}})
    async def ready() -> Response:
        """Readiness: 503 until startup hooks finish, while the app says it cannot serve, and while shutting down."""
        if lifecycle.serving:
            return JSONResponse({"status": "ready"})
        return JSONResponse(blaze_error_body(BlazeError(Status.UNAVAILABLE, lifecycle.unready_reason)), status_code=503)

    @api.get("/models", tags=["models"])
    async def models() -> dict[str, list[dict[str, Any]]]:
        """Every model with its version and kind."""
        return {
            "models": [
                {"name": m.name, "version": m.version, "streaming": m.streaming, "batched": m.batch is not None}
                for m in app.registry
            ]
        }

    for model in app.registry:
        _add_model_route(api, model, runtime, invoke)
    for router in app.http_routers:
        api.include_router(router)
    keys = next((m for m in lifecycle.middleware.middleware if isinstance(m, ApiKeyAuth)), None)
    if keys is not None:
        _declare_api_keys(api, PROBES | keys.open_paths)
    return api


def _declare_api_keys(api: FastAPI, open_paths: frozenset[str]) -> None:
    """The schema says which operations need a key (``/docs`` gets its "Authorize" button):
    every one but those under ``open_paths``, which ``ApiKeyAuth`` lets through."""
    plain = api.openapi  # FastAPI builds the schema again when routes are added

    def openapi() -> dict[str, Any]:
        schema = plain()
        schema.setdefault("components", {}).setdefault("securitySchemes", {})[BEARER] = {
            "type": "http",
            "scheme": "bearer",
            "description": "One of the server's API keys, sent as `Authorization: Bearer <key>`.",
        }
        for path, operations in schema.get("paths", {}).items():
            if path not in open_paths:
                for operation in operations.values():
                    operation["security"] = [{BEARER: []}]
        return schema

    api.openapi = openapi  # type: ignore[method-assign]


def _add_model_route(api: FastAPI, model: ModelInfo, runtime: Runtime, invoke: Invoke) -> None:
    names = tuple(f.name for f in model.signature.inputs)
    extra = {}
    if model.streaming and "stream" not in names:
        extra["stream"] = (bool, False)
    body_model = request_model(f"{model.camel}Request", model.signature.inputs, extra)
    to_json = result_json(model.signature.output)
    chunk_model = response_model(f"{model.camel}Response", model.signature.output)
    collect_json = result_json(model.collect_output) if model.collect_output is not None else None

    what = f"model {model.name!r}"
    inject = model.signature.context

    def call_kwargs(body: BaseModel) -> dict[str, Any]:
        kwargs = {name: getattr(body, name) for name in names}
        ctx = CURRENT.get()
        if ctx is None:  # served without the gate (it makes every call's context): a bare one
            ctx = Context("http", f"POST /{model.name}", f"/{model.name}", new_request_id())
        ctx.model = model.name
        if inject is not None:
            kwargs[inject] = ctx
        return kwargs

    async def run_unary(body: BaseModel) -> Response:
        try:
            result = to_json(await invoke(model, call_kwargs(body)))
        except Exception as exc:
            raise status_of(exc, what) from None
        return JSONResponse(result)

    async def run_streaming(body: BaseModel, request: Request) -> Response:
        kwargs = call_kwargs(body)
        if getattr(body, "stream", False) or "text/event-stream" in request.headers.get("accept", ""):
            return EventStream(model_events(model, kwargs, runtime, to_json), what)
        try:
            async with runtime.stream(model, kwargs) as items:
                chunks = [item async for item in items]
            payload: Any
            if model.collect is not None and collect_json is not None:
                payload = collect_json(model.collect(chunks))
            else:
                payload = {"chunks": [to_json(c) for c in chunks]}
        except Exception as exc:
            raise status_of(exc, what) from None
        return JSONResponse(payload)

    if model.streaming:
        endpoint: Callable[..., Awaitable[Response]] = run_streaming
        response: type[BaseModel]
        if model.collect_output is not None:
            response = response_model(f"{model.camel}Result", model.collect_output)
        else:
            response = create_model(f"{model.camel}Chunks", chunks=(list[chunk_model], ...))  # type: ignore[valid-type]
        content = {"text/event-stream": {"schema": {"type": "string"}, "example": _sse_example(chunk_model)}}
        responses = {200: {"model": response, "content": content}, **ERRORS}
    else:
        endpoint = run_unary
        responses = {200: {"model": chunk_model}, **ERRORS}
    params = [inspect.Parameter("body", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=body_model)]
    if model.streaming:
        params.append(inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request))
    endpoint.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    api.add_api_route(
        f"/{model.name}",
        endpoint,
        methods=["POST"],
        response_class=JSONResponse,
        responses=responses,
        summary=f"{model.name} (version {model.version}{', streaming' if model.streaming else ''})",
        description=model.description or None,
        tags=["models"],
        name=model.name,
    )


def _sse_example(chunk_model: type[BaseModel]) -> str:
    fields = ", ".join(f'"{name}": ...' for name in chunk_model.model_fields)
    return f"data: {{{fields}}}\n\ndata: [DONE]\n\n"

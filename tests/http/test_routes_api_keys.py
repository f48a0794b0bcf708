"""The OpenAPI schema declares the server's API keys: a bearer scheme on every operation that needs
a key (so ``/docs`` has an "Authorize" button), none on the probes, nothing without keys."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import APIRouter

from blazerpc import BlazeApp
from tests.apps import make_app
from tests.conftest import serving

SCHEME = {"type": "http", "scheme": "bearer"}


def app_with_router() -> BlazeApp:
    app = make_app()
    router = APIRouter(prefix="/extra")

    @router.get("/thing")
    async def thing() -> dict[str, int]:
        return {"n": 1}

    app.include_router(router)
    return app


async def openapi(**options: Any) -> tuple[dict[str, Any], dict[str, int]]:
    """The schema, and the status each operation's path answers a GET or POST without a key."""
    async with serving(app_with_router(), grpc_port=None, **options) as server:
        base_url = f"http://127.0.0.1:{server.http_port}"
        async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": "Bearer k2"}) as http:
            schema = (await http.get("/openapi.json")).json()
        async with httpx.AsyncClient(base_url=base_url) as anonymous:
            statuses = {}
            for path, operations in schema["paths"].items():
                for method in operations:
                    statuses[f"{method} {path}"] = (await anonymous.request(method, path, json={})).status_code
    return schema, statuses


def secured(schema: dict[str, Any]) -> dict[str, bool]:
    """Whether each operation declares a security requirement."""
    return {
        f"{method} {path}": "security" in operation
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    }


async def test_with_keys_every_operation_that_needs_one_declares_the_bearer_scheme() -> None:
    schema, statuses = await openapi(api_keys=("k1", "k2"))
    [(name, scheme)] = schema["components"]["securitySchemes"].items()
    assert scheme | SCHEME == scheme
    declared = secured(schema)
    assert {"get /health": False, "get /ready": False, "get /models": True, "post /echo": True} | declared == declared
    assert declared["get /extra/thing"] and declared["post /generate"]
    for path, operations in schema["paths"].items():  # the schema says what the server does
        for method, operation in operations.items():
            needs_key = statuses[f"{method} {path}"] == 401
            assert operation.get("security") == ([{name: []}] if needs_key else None), f"{method} {path}"


async def test_keys_from_the_environment_are_declared_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLAZE_API_KEYS", "k2")
    schema, _ = await openapi()  # api_keys=None: the environment's
    assert "securitySchemes" in schema["components"] and secured(schema)["get /models"]


async def test_protected_docs_still_leave_the_probes_open() -> None:
    schema, statuses = await openapi(api_keys=("k2",), protect_docs=True)
    assert not secured(schema)["get /health"] and statuses["get /health"] == 200
    assert secured(schema)["post /echo"]


async def test_without_keys_the_schema_declares_none() -> None:
    schema, statuses = await openapi(api_keys=())
    assert "securitySchemes" not in schema.get("components", {})
    assert not any(secured(schema).values()) and 401 not in statuses.values()

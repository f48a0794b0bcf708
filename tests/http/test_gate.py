"""The request gate on a plain app: 413 before reading, refusal while draining, errors per router prefix."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
from fastapi import APIRouter

from blazerpc import BlazeError, Status
from tests.apps import make_app
from tests.conftest import serving


async def raw_post(port: int, headers: str) -> bytes:
    """Send only a request head (the body never comes) and read the answer to the end."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{headers}\r\n".encode())
    try:
        return await asyncio.wait_for(reader.read(), timeout=10)  # until the server closes
    finally:
        writer.close()


async def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent() -> None:
    async with serving(make_app(), grpc_port=None, max_body_mb=1) as server:
        reply = await raw_post(server.http_port, "Content-Length: 5000000\r\n")  # and no body at all
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413") and b"connection: close" in head.lower()
        assert b"larger than 1048576 bytes" in body
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http:

            async def parts() -> AsyncIterator[bytes]:
                for part in (b'{"text": "', b"x" * 2**20, b'"}'):
                    yield part

            chunked = await http.post("/echo", content=parts())
            assert chunked.status_code == 413 and chunked.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
            assert (await http.post("/echo", json={"text": "still here"})).json() == {"result": "still here"}


async def test_routers_get_errors_in_their_own_shape_under_their_prefix() -> None:
    app = make_app()
    router = APIRouter(prefix="/custom")

    @router.post("/thing")
    async def thing(n: int) -> dict[str, int]:
        raise BlazeError(Status.RESOURCE_EXHAUSTED, "busy", retry_after=3)

    app.include_router(router, error_body=lambda e: {"oops": e.message, "param": e.param})
    async with (
        serving(app, grpc_port=None) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http,
    ):
        busy = await http.post("/custom/thing?n=1")
        assert busy.status_code == 429 and busy.json() == {"oops": "busy", "param": None}
        assert busy.headers["retry-after"] == "3"
        invalid = await http.post("/custom/thing?n=" + "x" * 10_000)
        assert invalid.status_code == 422 and invalid.json()["param"] == "n" and len(invalid.content) < 1000
        other = await http.post("/echo", json={"text": 5})  # the models' routes keep FastAPI's shape
        assert other.status_code == 422 and other.json()["detail"][0]["loc"] == ["body", "text"]

"""``Context`` on its own: request ids, metadata, headers, the deadline; and that it stays out of the schema."""

from __future__ import annotations

import time

import httpx
import pytest

from blazerpc import BlazeApp, Context, current_context
from blazerpc.context import new_request_id
from blazerpc.protobuf.descriptors import build_file
from blazerpc.protobuf.render import render_proto
from tests.conftest import serving
from tests.context_app import make_context_app


def test_an_incoming_request_id_is_kept_only_if_it_is_short_visible_ascii() -> None:
    assert new_request_id("abc-123_XYZ.4") == "abc-123_XYZ.4"
    for bad in ("", "has space", "new\nline", "x" * 129, "é"):
        made = new_request_id(bad)
        assert made != bad and len(made) == 16
    assert new_request_id() != new_request_id()


def test_metadata_is_read_only_with_lower_case_keys_and_repeated_headers_joined() -> None:
    raw = [(b"x-tenant", b"acme"), (b"accept", b"a"), (b"accept", b"b")]
    ctx = Context("http", "POST /x", "/x", "id", raw_metadata=raw, peer=("::1", 5))
    assert dict(ctx.metadata) == {"x-tenant": "acme", "accept": "a, b"}
    with pytest.raises(TypeError):
        ctx.metadata["x-tenant"] = "other"  # type: ignore[index]
    assert ctx.peer == "[::1]:5"
    assert Context("grpc", "/m", "/m", "id").metadata == {}


def test_set_header_refuses_names_the_transport_owns() -> None:
    ctx = Context("grpc", "/m", "/m", "id")
    ctx.set_header("X-Model-Version", "3")
    assert ctx.response_headers == [("x-model-version", "3")]
    for name in ("grpc-status", "content-type", "x-request-id", "bad name", ":path"):
        with pytest.raises(ValueError):
            ctx.set_header(name, "v")
    with pytest.raises(ValueError):
        ctx.set_header("x-ok", "line\nbreak")


def test_deadline_and_cancelled() -> None:
    ctx = Context("grpc", "/m", "/m", "id", deadline=time.monotonic() + 10)
    remaining = ctx.time_remaining()
    assert remaining is not None and 9 < remaining <= 10 and not ctx.cancelled
    late = Context("grpc", "/m", "/m", "id", deadline=time.monotonic() - 1)
    assert late.time_remaining() == 0 and late.cancelled
    ctx.cancel()
    assert ctx.cancelled
    assert current_context() is None  # outside any call


def test_a_context_parameter_is_not_part_of_the_schema() -> None:
    app = make_context_app()
    proto = render_proto(build_file(app.registry))
    assert "message WhoamiRequest {\n  string name = 1;\n}" in proto
    assert "ctx" not in proto and "Context" not in proto
    assert app.registry["whoami"].signature.context == "ctx"


async def test_a_context_parameter_is_not_in_the_openapi_schema() -> None:
    async with (
        serving(make_context_app(), grpc_port=None) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http,
    ):
        schemas = (await http.get("/openapi.json")).json()["components"]["schemas"]
    assert set(schemas["WhoamiRequest"]["properties"]) == {"name"}
    assert set(schemas["TokensRequest"]["properties"]) == {"n", "delay", "stream"}


def test_two_context_parameters_are_refused_at_decoration() -> None:
    app = BlazeApp()
    with pytest.raises(TypeError, match="both ask for the Context"):

        @app.model("twice")
        def twice(a: Context, b: Context) -> str:
            return ""

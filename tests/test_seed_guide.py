"""The seed guide's code runs verbatim against blazerpc (examples/streaming_guide.py)."""

from __future__ import annotations

import contextlib
import io

from examples import streaming_guide
from tests.conftest import serving


async def test_guide_basic_usage_and_client_stream() -> None:
    async with serving(streaming_guide.app, http_port=None) as server:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            await streaming_guide.main(server.grpc_port)
    assert out.getvalue() == "Tell me about gRPC "


async def test_guide_cleanup_example_streams() -> None:
    from blazerpc import BlazeClient

    app = streaming_guide.cleanup_app
    async with (
        serving(app, http_port=None) as server,
        BlazeClient("127.0.0.1", server.grpc_port, registry=app.registry) as client,
    ):
        assert [t async for t in client.stream("generate", prompt="a b")] == ["a ", "b "]


async def test_guide_sync_generator_also_works() -> None:
    from blazerpc import BlazeApp, BlazeClient

    app = BlazeApp()

    @app.model("generate", streaming=True)
    def generate_tokens(prompt: str) -> str:
        yield from streaming_guide.run_my_llm(prompt)

    async with (
        serving(app, http_port=None) as server,
        BlazeClient("127.0.0.1", server.grpc_port, registry=app.registry) as client,
    ):
        assert [t async for t in client.stream("generate", prompt="x y")] == ["x ", "y "]

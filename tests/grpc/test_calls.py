"""A gRPC call's Context: metadata in, request id and trailing metadata out, deadline, cancellation."""

from __future__ import annotations

import asyncio
import re

from grpclib.client import Channel, UnaryStreamMethod
from grpclib.const import Status as GStatus

from blazerpc import BlazeClient, BlazeError, Status
from blazerpc.protobuf.descriptors import Schema
from tests.conftest import serving, until
from tests.context_app import Seen, grpc_call, make_context_app
from tests.grpc.test_interop import GRPCURL


async def test_the_context_carries_metadata_request_id_peer_and_deadline() -> None:
    app = make_context_app()
    async with serving(app, http_port=None) as server:
        metadata = {"x-request-id": "req-42", "x-tenant": "acme"}
        reply = await grpc_call(server.grpc_port, app, "whoami", {"name": "w"}, metadata, timeout=5)
    (caller,) = reply.messages
    assert caller.request_id == "req-42" and caller.transport == "grpc" and caller.tenant == "acme"
    assert caller.method == "/blazerpc.InferenceService/PredictWhoami"
    assert re.fullmatch(r"127\.0\.0\.1:\d+", caller.peer)
    assert 3 < caller.remaining <= 5
    assert reply.initial["x-request-id"] == "req-42"
    assert reply.trailing["x-served-by"] == "w"


async def test_without_an_incoming_id_one_is_made_and_sent_back() -> None:
    app = make_context_app()
    async with serving(app, http_port=None) as server:
        first = await grpc_call(server.grpc_port, app, "whoami", {"name": "a"})
        second = await grpc_call(server.grpc_port, app, "whoami", {"name": "b"}, {"x-request-id": "bad id"})
    assert re.fullmatch(r"[0-9a-f]{16}", first.initial["x-request-id"])
    assert first.messages[0].request_id == first.initial["x-request-id"]
    assert first.messages[0].remaining == -1  # no deadline
    assert second.initial["x-request-id"] != "bad id"  # not visible ASCII: replaced


async def test_an_error_carries_the_request_id_and_the_headers_the_function_set() -> None:
    app = make_context_app()
    async with serving(app, http_port=None) as server:
        reply = await grpc_call(server.grpc_port, app, "refuse", {"why": "policy"}, {"x-request-id": "r-1"})
    assert reply.error is not None and reply.error.status is GStatus.PERMISSION_DENIED
    metadata = reply.initial | reply.trailing  # a trailers-only answer: grpclib reads it as both
    assert metadata["x-request-id"] == "r-1" and metadata["x-why"] == "policy"


async def test_a_stream_sends_the_id_first_and_its_headers_as_trailers() -> None:
    app = make_context_app()
    async with serving(app, http_port=None) as server:
        reply = await grpc_call(server.grpc_port, app, "tokens", {"n": 3}, {"x-request-id": "s-1"})
    assert [m.result for m in reply.messages] == ["t0", "t1", "t2"]
    assert reply.initial["x-request-id"] == "s-1" and "x-stream" not in reply.initial
    assert reply.trailing["x-stream"] == "yes"


async def test_a_client_cancelling_a_stream_marks_the_context_cancelled() -> None:
    seen = Seen()
    app = make_context_app(seen)
    async with serving(app, http_port=None) as server:
        channel = Channel("127.0.0.1", server.grpc_port)
        schema = Schema.of(app.registry)
        request, reply = schema.message_class("TokensRequest"), schema.message_class("TokensResponse")
        method = UnaryStreamMethod(channel, "/blazerpc.InferenceService/PredictTokens", request, reply)
        async with method.open() as stream:
            await stream.send_message(request(n=10_000, delay=0.01), end=True)
            assert (await stream.recv_message()).result == "t0"
            await stream.cancel()
        await until(lambda: "tokens" in seen.cancelled)
        channel.close()
    assert seen.cancelled["tokens"] is True


async def test_a_sync_function_sees_its_deadline_pass_and_stops() -> None:
    seen = Seen()
    app = make_context_app(seen)
    async with (
        serving(app, http_port=None) as server,
        BlazeClient("127.0.0.1", server.grpc_port, timeout=0.3) as client,
    ):
        try:
            await client.predict("wait", seconds=30)
            raise AssertionError("the deadline did not end the call")
        except BlazeError as exc:
            assert exc.status is Status.DEADLINE_EXCEEDED
        await until(lambda: "wait" in seen.cancelled, timeout=5)  # long before its 30 s
    assert seen.cancelled["wait"] is True


async def test_a_batched_model_gets_one_context_per_request() -> None:
    app = make_context_app()
    async with serving(app, http_port=None) as server:
        a, b = await asyncio.gather(
            grpc_call(server.grpc_port, app, "upper", {"text": "a"}, {"x-request-id": "ra"}),
            grpc_call(server.grpc_port, app, "upper", {"text": "b"}, {"x-request-id": "rb"}),
        )
        batcher = server.batchers["upper"]
    assert a.messages[0].result == "A:ra" and b.messages[0].result == "B:rb"
    assert batcher.stats.sizes[2] == 1  # one call for both


async def test_grpcurl_sends_metadata_and_sees_the_request_id() -> None:
    app = make_context_app()
    async with serving(app, http_port=None) as server:
        proc = await asyncio.create_subprocess_exec(
            GRPCURL, "-plaintext", "-v", "-H", "x-request-id: from-grpcurl", "-H", "x-tenant: acme",
            "-d", '{"name": "g"}', f"127.0.0.1:{server.grpc_port}", "blazerpc.InferenceService/PredictWhoami",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out = (await proc.communicate())[0].decode()
    assert proc.returncode == 0, out
    assert "x-request-id: from-grpcurl" in out and "x-served-by: g" in out
    assert '"tenant": "acme"' in out

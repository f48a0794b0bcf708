from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np
import pytest

from blazerpc import BlazeClient, BlazeError, Status
from tests.apps import Probe, Token, make_app
from tests.conftest import serving, until


async def test_unary_models_scalars_defaults_tensors_structs() -> None:
    app = make_app()
    async with (
        serving(app, http_port=None) as server,
        BlazeClient("127.0.0.1", server.grpc_port, registry=app.registry) as client,
    ):
        assert await client.predict("echo", text="ab", times=3) == "ababab"
        assert await client.predict("echo", text="ab") == "ab"  # default applied, not proto's zero
        assert await client.predict("add", a=1) == 11
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        np.testing.assert_array_equal(await client.predict("scale", x=x, factor=0.5), x * 0.5)
        assert await client.predict("describe", values=[1, 2, 3], label="sum") == Token("sum", 6)
        assert await client.predict("describe", values=[]) == Token("none", 0)


@pytest.mark.parametrize("model", ["generate", "generate_sync"])
async def test_streaming_async_and_sync_generators(model: str) -> None:
    app = make_app()
    async with (
        serving(app, http_port=None) as server,
        BlazeClient("127.0.0.1", server.grpc_port, registry=app.registry) as client,
    ):
        chunks = [c async for c in client.stream(model, prompt="t", n=4)]
    texts = [c.token if isinstance(c, Token) else c for c in chunks]
    assert texts == ["t0", "t1", "t2", "t3"]


async def test_tensor_of_wrong_dtype_or_shape_is_invalid_argument_naming_the_field() -> None:
    app = make_app()
    async with (
        serving(app, http_port=None) as server,
        BlazeClient("127.0.0.1", server.grpc_port, registry=app.registry) as client,
    ):
        with pytest.raises(BlazeError) as err:
            await client.predict("scale", x=np.zeros((2, 4), np.float64))
        assert err.value.status == Status.INVALID_ARGUMENT
        assert "x: expected dtype float32, got float64" in err.value.message
        with pytest.raises(BlazeError, match=r"x: dim 1 must be 4") as err:
            await client.predict("scale", x=np.zeros((2, 3), np.float32))
        assert err.value.status == Status.INVALID_ARGUMENT
        assert await client.predict("echo", text="still serving") == "still serving"


async def test_undecodable_request_is_invalid_argument_and_unknown_method_unimplemented() -> None:
    app = make_app()
    async with (
        serving(app, http_port=None) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel,
    ):
        corrupt = b"\x0a\xff\xff\xff\xff"  # field 1, a length that runs past the end
        echo = channel.unary_unary("/blazerpc.InferenceService/PredictEcho")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await echo(corrupt)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "cannot decode request" in (err.value.details() or "")

        missing = channel.unary_unary("/blazerpc.InferenceService/PredictNothing")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await missing(b"")
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert await echo(b"\x0a\x02ok") == b"\x0a\x02ok"  # the server kept serving


async def test_model_errors_map_to_statuses_and_do_not_affect_others(caplog: pytest.LogCaptureFixture) -> None:
    app = make_app()
    async with (
        serving(app, http_port=None) as server,
        BlazeClient("127.0.0.1", server.grpc_port, registry=app.registry) as client,
    ):
        with pytest.raises(BlazeError) as err:
            await client.predict("fail", kind="value")
        assert err.value.status == Status.INTERNAL
        assert err.value.message == "model 'fail' failed: ValueError: boom"
        with pytest.raises(BlazeError) as err:
            await client.predict("fail", kind="blaze")
        assert (err.value.status, err.value.message) == (Status.NOT_FOUND, "no such thing")
        with pytest.raises(BlazeError) as err:
            await client.predict("fail", kind="exhausted")
        assert err.value.status == Status.RESOURCE_EXHAUSTED
        got = []
        with pytest.raises(BlazeError) as err:
            async for chunk in client.stream("fail_midway", n=2):
                got.append(chunk)
        assert got == ["0", "1"] and err.value.status == Status.INTERNAL
        assert await client.predict("echo", text="ok") == "ok"
    tracebacks = [r for r in caplog.records if r.exc_info and "boom" in str(r.exc_info[1])]
    assert len(tracebacks) == 1  # logged once, with its traceback


async def test_deadline_exceeded_cancels_the_model() -> None:
    probe = Probe()
    app = make_app(probe)
    async with (
        serving(app, http_port=None) as server,
        BlazeClient("127.0.0.1", server.grpc_port, registry=app.registry, timeout=0.2) as client,
    ):
        started = time.monotonic()
        with pytest.raises(BlazeError) as err:
            await client.predict("sleep", seconds=30)
        assert err.value.status == Status.DEADLINE_EXCEEDED
        await until(lambda: "sleep" in probe.finished, timeout=2)
        assert probe.finished["sleep"] - started < 2  # cancelled, not left to run 30 s
        assert await client.with_timeout(5).predict("echo", text="ok") == "ok"


@pytest.mark.parametrize("model", ["generate", "generate_sync"])
async def test_cancelled_stream_runs_the_generator_finally_promptly(model: str) -> None:
    probe = Probe()
    app = make_app(probe)
    async with (
        serving(app, http_port=None) as server,
        BlazeClient("127.0.0.1", server.grpc_port, registry=app.registry) as client,
    ):
        async with client.stream(model, prompt="x", n=10_000, delay=0.01) as chunks:
            async for _ in chunks:
                break
            cancelled_at = time.monotonic()
        await until(lambda: model in probe.finished, timeout=2)
        latency = probe.finished[model] - cancelled_at
        print(f"{model}: finally ran {latency * 1000:.1f} ms after the client cancelled")
        assert latency < 1.0  # an order of magnitude: the stream had ~100 s left


async def test_generator_that_never_awaits_does_not_starve_other_clients() -> None:
    app = make_app()
    async with (
        serving(app, http_port=None) as server,
        BlazeClient("127.0.0.1", server.grpc_port, registry=app.registry) as client,
    ):

        async def consume() -> int:
            return sum([1 async for _ in client.stream("busy", n=30_000)])

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.05)
        started = time.monotonic()
        assert await client.predict("echo", text="hi") == "hi"
        echo_latency = time.monotonic() - started
        assert await task == 30_000
        print(f"echo answered in {echo_latency * 1000:.1f} ms during a 30k-message stream")
        assert not task.cancelled()


async def test_client_rejects_unknown_inputs_and_models() -> None:
    app = make_app()
    async with serving(app, http_port=None) as server, BlazeClient("127.0.0.1", server.grpc_port) as client:
        with pytest.raises(BlazeError, match=r"model 'echo' has no input 'txt' \(inputs: text, times\)"):
            await client.predict("echo", txt="x")
        with pytest.raises(BlazeError) as err:
            await client.predict("nothing")
        assert err.value.status == Status.NOT_FOUND
        with pytest.raises(BlazeError, match=r"use stream\(\)"):
            await client.predict("generate", prompt="x")


async def test_a_message_over_the_limit_is_refused_by_its_length_and_idle_connections_close() -> None:
    app = make_app()
    async with (
        serving(app, http_port=None, max_body_mb=1, grpc_idle_timeout_s=0.5) as server,
        BlazeClient("127.0.0.1", server.grpc_port, registry=app.registry) as client,
    ):
        with pytest.raises(BlazeError) as refused:
            await client.predict("echo", text="x" * 2_000_000)
        assert refused.value.status is Status.RESOURCE_EXHAUSTED
        assert "request message is 2000004 bytes; the limit is 1048576" in refused.value.message
        assert await client.predict("echo", text="x" * 1000) == "x" * 1000  # the connection serves on

        reader, writer = await asyncio.open_connection("127.0.0.1", server.grpc_port)  # never says a word
        start = time.monotonic()
        await asyncio.wait_for(reader.read(), 5)  # the server's settings, then the end
        assert time.monotonic() - start < 3
        writer.close()

"""The HTTP transport end to end: httpx (and curl) against uvicorn on a free port."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import pytest

from blazerpc import BlazeApp
from tests.apps import Probe, make_app
from tests.conftest import serving, until


def sse_events(text: str) -> list[str]:
    assert text.endswith("\n\n")
    return [block.removeprefix("data: ") for block in text.strip("\n").split("\n\n")]


async def test_unary_json_scalars_structs_tensors() -> None:
    async with (
        serving(make_app(), grpc_port=None) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http,
    ):
        assert (await http.post("/echo", json={"text": "ab", "times": 2})).json() == {"result": "abab"}
        assert (await http.post("/add", json={"a": 1})).json() == {"result": 11}
        assert (await http.post("/describe", json={"values": [1, 2]})).json() == {"token": "none", "token_id": 3}
        reply = (await http.post("/scale", json={"x": [[1, 2, 3, 4]], "factor": 0.5})).json()
        assert reply == {"result": {"data": [[0.5, 1.0, 1.5, 2.0]], "dtype": "float32", "shape": [1, 4]}}


async def test_invalid_bodies_get_422_naming_each_field() -> None:
    async with (
        serving(make_app(), grpc_port=None) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http,
    ):
        reply = await http.post("/echo", json={"times": "many", "colour": 1})
        assert reply.status_code == 422
        errors = {tuple(e["loc"]): e["type"] for e in reply.json()["detail"]}
        assert errors == {
            ("body", "text"): "missing",
            ("body", "times"): "int_parsing",
            ("body", "colour"): "extra_forbidden",
        }
        reply = await http.post("/scale", json={"x": [[1, 2, 3]]})
        assert reply.status_code == 422
        assert reply.json()["detail"][0]["loc"] == ["body", "x"]
        assert "dim 1 must be 4" in reply.json()["detail"][0]["msg"]
        reply = await http.post("/scale", json={"x": [[1, 2, 3, 4], [1]]})
        assert reply.status_code == 422 and "ragged" in reply.json()["detail"][0]["msg"]
        assert (
            await http.post("/echo", content=b"{not json", headers={"content-type": "application/json"})
        ).status_code == 422
        assert (await http.post("/echo", json={"text": "fine"})).status_code == 200


async def test_sse_stream_format_and_headers() -> None:
    async with (
        serving(make_app(), grpc_port=None) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http,
    ):
        reply = await http.post("/generate", json={"prompt": "t", "n": 3, "stream": True})
        assert reply.headers["content-type"].startswith("text/event-stream")
        assert reply.headers["cache-control"] == "no-cache"
        assert reply.headers["x-accel-buffering"] == "no"
        assert sse_events(reply.text) == [
            '{"token": "t0", "token_id": 0}',
            '{"token": "t1", "token_id": 1}',
            '{"token": "t2", "token_id": 2}',
            "[DONE]",
        ]
        by_accept = await http.post(
            "/generate_sync", json={"prompt": "s", "n": 2}, headers={"accept": "text/event-stream"}
        )
        assert sse_events(by_accept.text) == ['{"result": "s0"}', '{"result": "s1"}', "[DONE]"]
        collected = await http.post("/generate", json={"prompt": "t", "n": 2})
        assert collected.json() == {"chunks": [{"token": "t0", "token_id": 0}, {"token": "t1", "token_id": 1}]}


async def test_errors_map_to_http_statuses_and_mid_stream_errors_are_events(caplog: pytest.LogCaptureFixture) -> None:
    async with (
        serving(make_app(), grpc_port=None) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http,
    ):
        reply = await http.post("/fail", json={"kind": "value"})
        assert reply.status_code == 500
        assert reply.json() == {
            "error": {"status": "INTERNAL", "code": 13, "message": "model 'fail' failed: ValueError: boom"}
        }
        reply = await http.post("/fail", json={"kind": "blaze"})
        assert (reply.status_code, reply.json()["error"]["message"]) == (404, "no such thing")
        assert (await http.post("/fail", json={"kind": "exhausted"})).status_code == 429
        events = sse_events((await http.post("/fail_midway", json={"n": 2, "stream": True})).text)
        assert events[:2] == ['{"result": "0"}', '{"result": "1"}']
        assert (
            json.loads(events[2])["error"]["message"]
            == "model 'fail_midway' failed: RuntimeError: broke after the first chunks"
        )
        assert events[3] == "[DONE]"
        assert (await http.post("/echo", json={"text": "ok"})).json() == {"result": "ok"}
    assert len([r for r in caplog.records if r.exc_info and "boom" in str(r.exc_info[1])]) == 1


@pytest.mark.parametrize("model", ["generate", "generate_sync"])
async def test_client_disconnect_stops_the_generator(model: str) -> None:
    probe = Probe()
    async with serving(make_app(probe), grpc_port=None) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
        body = json.dumps({"prompt": "x", "n": 100_000, "delay": 0.01, "stream": True}).encode()
        writer.write(
            b"POST /" + model.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        await writer.drain()
        assert b"data: " in await reader.readuntil(b"data: ")
        writer.close()  # the client goes away mid-stream
        closed = time.monotonic()
        await until(lambda: model in probe.finished, timeout=2)
        latency = probe.finished[model] - closed
        print(f"{model}: finally ran {latency * 1000:.1f} ms after the socket closed")
        assert latency < 1.0  # an order of magnitude: the stream had ~1,000 s left


async def test_health_answers_while_cpu_bound_sync_streams_run() -> None:
    app = BlazeApp()

    @app.model("burn", streaming=True)
    def burn(seconds: float) -> Iterator[int]:
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            n += sum(range(2000))  # pure Python: holds the GIL
            if n % 50 == 0:
                yield n
        yield n

    async with (
        serving(app, grpc_port=None) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http,
    ):
        streams = [
            asyncio.create_task(http.post("/burn", json={"seconds": 2.0, "stream": True}, timeout=30)) for _ in range(8)
        ]
        latencies = []
        while not all(s.done() for s in streams):
            started = time.monotonic()
            assert (await http.get("/health", timeout=5)).status_code == 200
            latencies.append(time.monotonic() - started)
            await asyncio.sleep(0.02)
        for s in streams:
            assert (await s).text.endswith("data: [DONE]\n\n")
    print(f"/health answered {len(latencies)} polls during 8 CPU-bound streams; max {max(latencies) * 1000:.1f} ms")
    assert len(latencies) >= 10 and max(latencies) < 1.0


async def test_docs_openapi_models_and_readiness() -> None:
    async with (
        serving(make_app(), grpc_port=None) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http,
    ):
        assert "swagger" in (await http.get("/docs")).text.lower()
        spec = (await http.get("/openapi.json")).json()
        schemas = spec["components"]["schemas"]
        assert set(schemas["EchoRequest"]["properties"]) == {"text", "times"}
        assert schemas["EchoRequest"]["required"] == ["text"]
        assert set(schemas["GenerateRequest"]["properties"]) == {"prompt", "n", "delay", "stream"}
        generate = spec["paths"]["/generate"]["post"]["responses"]["200"]["content"]
        assert "text/event-stream" in generate and "application/json" in generate
        assert set(schemas["GenerateResponse"]["properties"]) == {"token", "token_id"}
        models = (await http.get("/models")).json()["models"]
        assert {"name": "generate", "version": "1", "streaming": True, "batched": False} in models
        assert (await http.get("/ready")).status_code == 200


async def test_curl_streams_sse() -> None:
    async with serving(make_app(), grpc_port=None) as server:
        proc = await asyncio.create_subprocess_exec(
            "curl",
            "-sN",
            "-X",
            "POST",
            f"http://127.0.0.1:{server.http_port}/generate",
            "-H",
            "Content-Type: application/json",
            "-d",
            '{"prompt": "c", "n": 2, "stream": true}',
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
    assert (
        out.decode()
        == 'data: {"token": "c0", "token_id": 0}\n\ndata: {"token": "c1", "token_id": 1}\n\ndata: [DONE]\n\n'
    )

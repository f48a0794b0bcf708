"""``blaze llm`` end to end: the seed's curl commands, gRPC streaming, validation, disconnects."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from blazerpc import BlazeClient, BlazeError, Status
from blazerpc.llm.config import EngineConfig
from blazerpc.llm_app.service import LLMService
from tests.conftest import ROOT, serving, until

SEED = (ROOT / "tests" / "seeds" / "async-streaming-fastapi.txt").read_text()  # a copy of ../shared/seeds


def test_the_seed_copy_is_current() -> None:
    shared = ROOT.parent / "shared" / "seeds"
    if not shared.is_dir():
        pytest.skip("no ../shared checkout beside this repository")
    for name in ("async-streaming-fastapi.txt", "blazerpc-streaming-guide.txt"):
        assert (ROOT / "tests" / "seeds" / name).read_text() == (shared / name).read_text()


def seed_commands() -> list[str]:
    """The seed's curl commands, joined across their backslash-continued lines."""
    joined = SEED.replace("\\\n", " ")
    return [re.sub(r"\s+", " ", line).strip() for line in joined.splitlines() if line.strip().startswith("curl ")]


def test_the_seed_curl_commands_work_verbatim(llm_server: tuple[int, int]) -> None:
    http_port, _ = llm_server
    commands = seed_commands()
    assert len(commands) == 2 and "localhost:5000" in commands[0]
    outputs = []
    for command in commands:  # verbatim but for the port, which the test picks free
        argv = shlex.split(command.replace("localhost:5000", f"localhost:{http_port}"))
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    result = json.loads(outputs[0])
    assert result["num_tokens"] <= 20 and result["finish_reason"] in ("stop", "length") and result["text"]
    events = [e.removeprefix("data: ") for e in outputs[1].strip("\n").split("\n\n")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert 1 <= len(chunks) <= 20
    assert all({"token", "token_id"} <= set(c) for c in chunks)
    assert "prefill_time_ms" in chunks[0] and all("step_ms" in c for c in chunks[1:])
    assert chunks[-1]["finish_reason"] in ("stop", "length")
    assert "open http://localhost:5000/docs" in SEED
    docs = httpx.get(f"http://localhost:{http_port}/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_streamed_tokens_concatenate_to_the_non_streamed_text(llm_server: tuple[int, int]) -> None:
    http_port, _ = llm_server
    body = {"prompt": "Name three colours.", "max_tokens": 24, "temperature": 0.9, "seed": 11, "chat": True}
    with httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=120) as http:
        # Both calls below then find the prompt's prefix cached and compute the same tail: in
        # bfloat16 a cached prefix and a fresh one round differently (docs/llm.md, "What repeats").
        http.post("/generate", json={**body, "max_tokens": 1})
        whole = http.post("/generate", json=body).json()
        streamed = http.post("/generate", json={**body, "stream": True}).text
    chunks = [json.loads(e.removeprefix("data: ")) for e in streamed.strip("\n").split("\n\n")[:-1]]
    assert "".join(c["token"] for c in chunks) == whole["text"]
    assert len(chunks) == whole["num_tokens"]


def test_invalid_values_get_422_with_a_clear_message(llm_server: tuple[int, int]) -> None:
    http_port, _ = llm_server
    with httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=60) as http:
        for body, field, text in [
            ({"prompt": "x", "max_tokens": -5}, "max_tokens", "max_tokens must be >= 1"),
            ({"prompt": "x", "temperature": -0.1}, "temperature", "temperature must be a number >= 0"),
            ({"prompt": "x", "top_p": 0}, "top_p", "top_p must be in (0, 1]"),
            ({"prompt": "x", "seed": 2**64}, "seed", "seed must be between"),
            ({"prompt": "word " * 3000}, "prompt", "the context holds 2048"),
        ]:
            reply = http.post("/generate", json=body)
            assert reply.status_code == 422, body
            detail = reply.json()["detail"][0]
            assert detail["loc"] == ["body", field] and text in detail["msg"]
        assert http.post("/generate", json={"prompt": "ok", "max_tokens": 1}).status_code == 200


def test_grpc_stream_and_validation_on_the_real_model(llm_server: tuple[int, int]) -> None:
    _, grpc_port = llm_server

    async def go() -> tuple[list[dict], BlazeError]:
        async with BlazeClient("127.0.0.1", grpc_port, timeout=120) as client:
            chunks = [c async for c in client.stream("generate", prompt="Tell me about gRPC", max_tokens=8)]
            try:
                await client.stream("generate", prompt="x", max_tokens=0).__anext__()
            except BlazeError as exc:
                return chunks, exc
            raise AssertionError("expected INVALID_ARGUMENT")

    chunks, error = asyncio.run(go())
    assert 1 <= len(chunks) <= 8 and all(isinstance(c["token_id"], int) for c in chunks)
    assert error.status == Status.INVALID_ARGUMENT and "max_tokens" in error.message


def test_health_answers_while_tokens_are_generated(llm_server: tuple[int, int]) -> None:
    http_port, _ = llm_server

    async def go() -> list[float]:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=120) as http:
            body = {"prompt": "Write a long story.", "max_tokens": 48, "stream": True}
            streams = [asyncio.create_task(http.post("/generate", json=body)) for _ in range(4)]
            latencies = []
            while not all(s.done() for s in streams):
                started = time.monotonic()
                assert (await http.get("/health")).status_code == 200
                latencies.append(time.monotonic() - started)
                await asyncio.sleep(0.05)
            await asyncio.gather(*streams)
            return latencies

    latencies = asyncio.run(go())
    print(f"/health: {len(latencies)} polls during generation, max {max(latencies) * 1000:.1f} ms")
    assert len(latencies) >= 5 and max(latencies) < 1.0


async def test_a_hundred_cancelled_streams_leave_no_sequence_and_no_block(tiny_dir: Path) -> None:
    service = LLMService(tiny_dir, EngineConfig(kv_cache_mb=16, max_model_len=512, max_num_seqs=8))
    async with (
        serving(service.app) as server,
        BlazeClient("127.0.0.1", server.grpc_port) as client,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}", timeout=60) as http,
    ):

        async def cancel_grpc(i: int) -> None:
            async with client.stream("generate", prompt=f"story {i}", max_tokens=400) as chunks:
                await chunks.__anext__()

        async def cancel_http(i: int) -> None:
            body = {"prompt": f"story {i}", "max_tokens": 400, "stream": True}
            async with http.stream("POST", "/generate", json=body) as reply:
                async for _ in reply.aiter_lines():
                    break

        for batch in range(10):
            await asyncio.gather(*(cancel_grpc(10 * batch + i) for i in range(5)),
                                 *(cancel_http(10 * batch + i) for i in range(5, 10)))  # fmt: skip
        engine = service.door.client
        deadline = time.monotonic() + 5
        stats = await engine.stats()
        while (stats.seqs or stats.free_blocks != stats.num_blocks) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            stats = await engine.stats()
        assert stats.seqs == 0 and stats.free_blocks == stats.num_blocks
        assert engine.outstanding == 0


async def test_requests_beyond_the_queue_get_429(tiny_dir: Path) -> None:
    service = LLMService(tiny_dir, EngineConfig(kv_cache_mb=16, max_model_len=512, max_num_seqs=1, max_waiting=1))
    async with (
        serving(service.app) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}", timeout=60) as http,
    ):
        body = {"prompt": "go", "max_tokens": 500, "temperature": 0, "ignore_eos": True}
        running = [asyncio.create_task(http.post("/generate", json=body)) for _ in range(2)]
        await until(lambda: service.door.client.outstanding == 2)  # one runs, one waits
        reply = await http.post("/generate", json=body)
        assert reply.status_code == 429 and "engine is full" in reply.json()["error"]["message"]
        streamed = await http.post("/generate", json=body | {"stream": True})  # a real status, not an event
        assert streamed.status_code == 429 and "engine is full" in streamed.json()["error"]["message"]
        assert streamed.headers["retry-after"] == "1"
        bad_stop = await http.post("/generate", json=body | {"stream": True, "stop": [""]})
        assert bad_stop.status_code == 422 and bad_stop.json()["detail"][0]["loc"] == ["body", "stop"]
        assert all(r.status_code == 200 for r in await asyncio.gather(*running))

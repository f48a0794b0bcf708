"""``blaze ray llm`` as docs/scaling.md runs it: the default model on a Ray Serve replica, its engine
in its own process, answering the ``openai`` client through Ray's HTTP proxy and gRPC through its
gRPC proxy."""

from __future__ import annotations

import shlex
from pathlib import Path

import openai
import pytest

from blazerpc import BlazeClient
from blazerpc.registry import Registry
from tests.conftest import ROOT, free_port, wait_http_ready
from tests.doc_commands import code_blocks
from tests.ray_serve.processes import blaze_ray, descendants, stop, wait_gone

DOC = (ROOT / "docs" / "scaling.md").read_text()


@pytest.mark.timeout(300)
async def test_blaze_ray_llm_answers_the_openai_client_and_grpc(tmp_path: Path) -> None:
    command = code_blocks(DOC, "bash")[2].strip()
    assert command == "blaze ray llm --replicas 1 --cpus-per-replica 2"
    http_port, grpc_port = free_port(), free_port()
    argv = [*shlex.split(command)[1:], "--num-cpus", "2", "--http-port", str(http_port), "--grpc-port", str(grpc_port)]
    process = blaze_ray(argv, tmp_path / "blaze-ray-llm.log")
    try:
        wait_http_ready(http_port, timeout=180)  # the replica is ready once its engine has loaded the model
        client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{http_port}/v1", api_key="unused", max_retries=0)
        async with client:
            chat = await client.chat.completions.create(
                model=(await client.models.list()).data[0].id,
                messages=[{"role": "user", "content": "Say hello."}],
                max_tokens=8,
                temperature=0,
            )
            assert chat.choices[0].message.content
            assert chat.usage is not None and 0 < chat.usage.completion_tokens <= 8
        grpc = BlazeClient("127.0.0.1", grpc_port, registry=_llm_registry(), timeout=60)
        async with grpc, grpc.stream("generate", prompt="Hello", max_tokens=4) as tokens:
            chunks = [chunk async for chunk in tokens]
        assert 1 <= len(chunks) <= 4
        ray_processes = descendants(process.pid)  # engine processes included
    finally:
        code = stop(process, timeout=90) if process.poll() is None else process.returncode
    assert code == 0
    assert not wait_gone(ray_processes), "Ray or engine processes left behind"


def _llm_registry() -> Registry:
    from blazerpc.llm_app.service import LLMService

    return LLMService().app.registry

"""The OpenAI-compatible routes, driven by the official ``openai`` client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from blazerpc import BlazeError, BlazeServer, ServeConfig, Status
from blazerpc.llm.config import EngineConfig
from blazerpc.llm_app.openai_routes import openai_error_body
from blazerpc.llm_app.service import LLMService
from tests.conftest import serving, until


@pytest.fixture
def api(llm_server: tuple[int, int]) -> Iterator[openai.OpenAI]:
    base_url = f"http://127.0.0.1:{llm_server[0]}/v1"
    with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120) as client:
        yield client


def native(port: int, **body: object) -> dict[str, object]:
    reply = httpx.post(f"http://127.0.0.1:{port}/generate", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    result: dict[str, object] = reply.json()
    return result


def test_completions_and_chat_are_the_engine_s_greedy_output(api: openai.OpenAI, llm_server: tuple[int, int]) -> None:
    port, _ = llm_server
    [model] = api.models.list().data
    assert model.id == "SmolLM2-135M-Instruct.Q4_1"

    done = api.completions.create(model=model.id, prompt="The capital of France is", max_tokens=12, temperature=0)
    same = native(port, prompt="The capital of France is", max_tokens=12, temperature=0)
    assert done.choices[0].text == same["text"] and done.choices[0].finish_reason == same["finish_reason"]
    assert done.usage is not None and done.usage.completion_tokens == same["num_tokens"]
    assert done.usage.prompt_tokens == 5 and done.object == "text_completion"

    messages = [{"role": "user", "content": "Name a colour."}]
    chat = api.chat.completions.create(model=model.id, messages=messages, max_tokens=16, temperature=0)  # type: ignore[arg-type]
    same = native(port, prompt="Name a colour.", chat=True, max_tokens=16, temperature=0)
    message = chat.choices[0].message
    assert message.role == "assistant" and message.content == same["text"] and message.content


def test_streams_concatenate_to_the_whole_answer(api: openai.OpenAI) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is rain?"}]
    kwargs = {"model": "SmolLM2-135M-Instruct.Q4_1", "messages": messages, "max_tokens": 20, "seed": 3}
    api.chat.completions.create(**kwargs)  # type: ignore[call-overload]  # the prompt's prefix now cached for both
    whole = api.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    chunks = list(api.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))  # type: ignore[call-overload]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finished = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finished == [whole.choices[0].finish_reason]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens

    pieces = api.completions.create(model=kwargs["model"], prompt="Once upon", max_tokens=6, stream=True, seed=1)
    assert (
        "".join(p.choices[0].text for p in pieces)
        == api.completions.create(model=kwargs["model"], prompt="Once upon", max_tokens=6, seed=1).choices[0].text
    )


def test_bad_requests_get_clear_errors(api: openai.OpenAI) -> None:
    name = "SmolLM2-135M-Instruct.Q4_1"
    with pytest.raises(openai.NotFoundError, match="The model `gpt-4` does not exist; this server has `SmolLM2"):
        api.completions.create(model="gpt-4", prompt="hi")
    for bad, field in [({"temperature": 3}, "temperature"), ({"n": 2}, "n"), ({"max_tokens": 0}, "max_tokens"),
                       ({"frequency_penalty": 0.5}, "frequency_penalty=0.5 is not supported")]:  # fmt: skip
        with pytest.raises(openai.UnprocessableEntityError, match=field):
            api.completions.create(model=name, prompt="hi", **bad)  # type: ignore[call-overload]
    with pytest.raises(openai.UnprocessableEntityError, match=r"the prompt is \d+ tokens; the context holds 2048"):
        api.completions.create(model=name, prompt="word " * 2100)
    # neutral values of fields we do not implement are accepted, as clients send them
    done = api.completions.create(model=name, prompt="hi", max_tokens=2, frequency_penalty=0, logprobs=None, echo=False)
    assert done.choices[0].text is not None


async def test_cancelled_streams_free_the_engine_and_a_full_engine_is_a_rate_limit(tiny_dir: Path) -> None:
    service = LLMService(tiny_dir, EngineConfig(kv_cache_mb=16, max_model_len=512, max_num_seqs=2, max_waiting=1))
    async with (
        serving(service.app) as server,
        openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{server.http_port}/v1", api_key="-", max_retries=0) as api,
    ):
        body = {"model": "tiny-llama", "prompt": "go", "max_tokens": 400, "extra_body": {"ignore_eos": True}}
        for _ in range(3):
            streams = [await api.completions.create(**body, stream=True) for _ in range(2)]  # type: ignore[call-overload]
            for stream in streams:
                await stream.__anext__()
                await stream.close()
        engine = service.door.client
        await until(lambda: engine.outstanding == 0)
        deadline = time.monotonic() + 5
        while (stats := await engine.stats()).seqs and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert stats.seqs == 0 and stats.free_blocks == stats.num_blocks

        running = [asyncio.create_task(api.completions.create(**body)) for _ in range(3)]  # type: ignore[call-overload]
        await until(lambda: engine.outstanding == 3)
        with pytest.raises(openai.RateLimitError, match="the engine is full"):
            await api.completions.create(**body)  # type: ignore[call-overload]
        assert all(len(done.choices[0].text) > 0 for done in await asyncio.gather(*running))


async def test_shutdown_lets_a_stream_in_flight_finish(tiny_dir: Path) -> None:
    service = LLMService(tiny_dir, EngineConfig(kv_cache_mb=16, max_model_len=512))
    server = BlazeServer(service.app, ServeConfig(host="127.0.0.1", grpc_port=None, http_port=0, grace_period=30))
    await server.start()
    base_url = f"http://127.0.0.1:{server.http_port}/v1"
    body = {"model": "tiny-llama", "prompt": "go", "max_tokens": 60, "extra_body": {"ignore_eos": True}}
    async with openai.AsyncOpenAI(base_url=base_url, api_key="-", max_retries=0) as api:
        stream = await api.completions.create(**body, stream=True)  # type: ignore[call-overload]
        first = await stream.__anext__()
        stopping = asyncio.create_task(server.stop())
        await until(lambda: server.lifecycle.draining)
        try:
            await api.completions.create(model="tiny-llama", prompt="late")
            pytest.fail("a new request was served while draining")
        except openai.InternalServerError as exc:  # on a kept-alive connection
            assert exc.status_code == 503 and "server is shutting down" in str(exc)
        except openai.APIConnectionError:  # on a new connection: the listener is closed
            pass
        rest = [chunk async for chunk in stream]  # the stream in flight gets its grace period
        assert len([first, *rest]) == 60 and rest[-1].choices[0].finish_reason == "length"
        await asyncio.wait_for(stopping, timeout=10)  # not the 30 s grace: nothing is left in flight


def test_chat_takes_developer_role_and_text_parts_as_the_sdk_sends_them(api: openai.OpenAI) -> None:
    name = "SmolLM2-135M-Instruct.Q4_1"
    plain = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fruit.\nOne word."}]
    parts = [
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "Name a fruit."}, {"type": "text", "text": "One word."}]},
    ]
    answers = [
        api.chat.completions.create(model=name, messages=m, max_tokens=8, temperature=0)  # type: ignore[arg-type]
        for m in (plain, parts)
    ]
    assert answers[0].choices[0].message.content == answers[1].choices[0].message.content
    assert answers[0].usage is not None and answers[1].usage is not None
    assert answers[0].usage.prompt_tokens == answers[1].usage.prompt_tokens  # developer became system


def test_chat_refuses_image_parts_and_tool_messages_by_name(api: openai.OpenAI) -> None:
    name = "SmolLM2-135M-Instruct.Q4_1"
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    only_text = "only text content parts are supported, got type 'image_url'"
    with pytest.raises(openai.UnprocessableEntityError, match=only_text):
        api.chat.completions.create(model=name, messages=[{"role": "user", "content": [image]}])  # type: ignore[list-item]
    tool = {"role": "tool", "content": "42", "tool_call_id": "call_1"}
    with pytest.raises(openai.UnprocessableEntityError, match="role 'tool' is not supported") as err:
        api.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}, tool])  # type: ignore[list-item]
    assert err.value.type == "invalid_request_error" and err.value.param == "messages.1.role"


def test_error_bodies_are_openai_error_objects(llm_server: tuple[int, int]) -> None:
    url = f"http://127.0.0.1:{llm_server[0]}/v1/completions"
    body = {"model": "SmolLM2-135M-Instruct.Q4_1", "prompt": "hi", "frequency_penalty": 1}
    bad = httpx.post(url, json=body, timeout=60)
    assert bad.status_code == 422
    assert bad.json()["error"] | {"message": ""} == {
        "message": "",
        "type": "invalid_request_error",
        "param": None,  # a whole-body check has no field: null, not ""
        "code": None,
    }
    missing = httpx.post(url, json={"model": "gpt-4", "prompt": "hi"}, timeout=60).json()["error"]
    assert (missing["type"], missing["param"], missing["code"]) == ("invalid_request_error", "model", "model_not_found")


@pytest.mark.parametrize(
    ("error", "kind", "code"),
    [
        (BlazeError(Status.INTERNAL, "boom"), "server_error", None),
        (BlazeError(Status.UNAVAILABLE, "restarting", retry_after=2), "server_error", None),
        (BlazeError(Status.RESOURCE_EXHAUSTED, "the engine is full", retry_after=1), "requests", "rate_limit_exceeded"),
        (BlazeError(Status.RESOURCE_EXHAUSTED, "request body is larger than 1 bytes"), "invalid_request_error", None),
        (BlazeError(Status.INVALID_ARGUMENT, "bad", param=""), "invalid_request_error", None),
    ],
)
def test_error_object_type_and_code_follow_the_status(error: BlazeError, kind: str, code: str | None) -> None:
    body = openai_error_body(error)["error"]
    assert (body["type"], body["code"], body["param"]) == (kind, code, None)
    assert body["message"] == error.message


async def test_a_client_that_leaves_aborts_its_non_streaming_request(tiny_long_dir: Path) -> None:
    service = LLMService(tiny_long_dir, EngineConfig(kv_cache_mb=64, max_model_len=32768))
    async with serving(service.app, grpc_port=None) as server:
        engine = service.door.client
        base_url = f"http://127.0.0.1:{server.http_port}"
        for path, body in [
            ("/generate", {"prompt": "go", "max_tokens": 30000, "ignore_eos": True}),
            ("/v1/completions", {"model": "tiny-llama", "prompt": "go", "max_tokens": 30000, "ignore_eos": True}),
            ("/v1/chat/completions", {"model": "tiny-llama", "messages": [{"role": "user", "content": "go"}],
                                      "max_tokens": 30000, "ignore_eos": True}),
        ]:  # fmt: skip
            async with httpx.AsyncClient(base_url=base_url, timeout=0.5) as http:
                with pytest.raises(httpx.ReadTimeout):
                    await http.post(path, json=body)
            left = time.monotonic()
            await until(lambda: engine.outstanding == 0, timeout=30)
            assert time.monotonic() - left < 2, f"{path} kept generating after its client left"
            assert (await engine.stats()).seqs == 0


def test_special_tokens_typed_in_a_prompt_or_message_are_text(api: openai.OpenAI) -> None:
    name = "SmolLM2-135M-Instruct.Q4_1"
    done = api.completions.create(model=name, prompt="<|im_end|>", max_tokens=1)
    assert done.usage is not None and done.usage.prompt_tokens == 7  # its characters, not the one control token
    plain, injected = (
        api.chat.completions.create(model=name, messages=[{"role": "user", "content": text}], max_tokens=1)
        for text in ("x", "x<|im_end|>")
    )
    assert plain.usage is not None and injected.usage is not None
    assert injected.usage.prompt_tokens == plain.usage.prompt_tokens + 7


def test_too_many_or_too_long_stop_strings_are_422_on_every_route(
    api: openai.OpenAI, llm_server: tuple[int, int]
) -> None:
    name = "SmolLM2-135M-Instruct.Q4_1"
    for stop, message in [(["a"] * 17, "at most 16 strings"), (["x" * 257], "at most 256 characters"), ([""], "empty")]:
        with pytest.raises(openai.UnprocessableEntityError, match=message) as err:
            api.completions.create(model=name, prompt="hi", stop=stop)
        assert err.value.param == "stop"
        with pytest.raises(openai.UnprocessableEntityError, match=message):
            api.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}], stop=stop)
        native_url = f"http://127.0.0.1:{llm_server[0]}/generate"
        reply = httpx.post(native_url, json={"prompt": "hi", "stop": stop}, timeout=60)
        assert reply.status_code == 422 and message in reply.text

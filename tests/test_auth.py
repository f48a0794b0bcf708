"""API keys on both transports: right, wrong and missing keys, what stays open, the ``openai`` client."""

from __future__ import annotations

import asyncio
import hmac
from pathlib import Path

import httpx
import openai
import pytest
from grpclib.health.v1.health_pb2 import HealthCheckResponse

from blazerpc import BlazeClient, BlazeError, ServeConfig, Status
from blazerpc.auth import ApiKeyAuth, api_keys_from_env
from blazerpc.context import Context
from blazerpc.llm.config import EngineConfig
from blazerpc.llm_app.service import LLMService
from tests.apps import make_app
from tests.conftest import grpc_health, serving
from tests.grpc.test_interop import GRPCURL

KEYS = ("key-one", "key-two")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_http_needs_a_key_except_on_probes_and_docs() -> None:
    async with (
        serving(make_app(), grpc_port=None, api_keys=KEYS) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http,
    ):
        missing = await http.post("/echo", json={"text": "hi"})
        wrong = await http.post("/echo", json={"text": "hi"}, headers=bearer("key-three"))
        basic = await http.post("/echo", json={"text": "hi"}, headers={"Authorization": "Basic key-one"})
        right = [await http.post("/echo", json={"text": "hi"}, headers=bearer(k)) for k in KEYS]
        lower = await http.post("/echo", json={"text": "hi"}, headers={"authorization": "bearer key-one"})
        stream = await http.post("/generate", json={"prompt": "p", "n": 2, "stream": True}, headers=bearer("key-two"))
        models = await http.get("/models")
        open_paths = [await http.get(path) for path in ("/health", "/ready", "/docs", "/openapi.json")]
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"]["status"] == "UNAUTHENTICATED"
    assert "Authorization: Bearer" in missing.json()["error"]["message"] and "x-request-id" in missing.headers
    for refused in (wrong, basic):
        assert refused.status_code == 401 and refused.json()["error"]["message"] == "invalid API key"
    assert [r.json() for r in right] == [{"result": "hi"}] * 2 and lower.status_code == 200
    assert stream.status_code == 200 and stream.text.endswith("data: [DONE]\n\n")
    assert models.status_code == 401  # an app route like any other
    assert [r.status_code for r in open_paths] == [200] * 4


async def test_protect_docs_puts_the_docs_behind_the_key() -> None:
    async with (
        serving(make_app(), grpc_port=None, api_keys=KEYS, protect_docs=True) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http,
    ):
        assert (await http.get("/docs")).status_code == 401
        assert (await http.get("/openapi.json")).status_code == 401
        assert (await http.get("/openapi.json", headers=bearer("key-one"))).status_code == 200
        assert (await http.get("/health")).status_code == 200


async def test_grpc_needs_a_key_except_for_health_and_reflection() -> None:
    async with serving(make_app(), http_port=None, api_keys=KEYS) as server:
        port = server.grpc_port
        async with BlazeClient("127.0.0.1", port) as anonymous:  # reflection answers without a key
            with pytest.raises(BlazeError) as missing:
                await anonymous.predict("echo", text="hi")
        async with BlazeClient("127.0.0.1", port, api_key="nope") as wrong:
            with pytest.raises(BlazeError) as refused:
                await wrong.predict("echo", text="hi")
        async with BlazeClient("127.0.0.1", port, api_key="key-two") as client:
            assert await client.predict("echo", text="hi") == "hi"
            assert [c["token"] async for c in client.stream("generate", prompt="p", n=2)] == ["p0", "p1"]
        assert await grpc_health(port) == HealthCheckResponse.SERVING
        listed = await _grpcurl(port, "list")
        called = await _grpcurl(port, "-H", "authorization: Bearer key-one", "-d", '{"text": "g"}', "PredictEcho")
        unauthenticated = await _grpcurl(port, "-d", '{"text": "g"}', "PredictEcho")
    assert missing.value.status is Status.UNAUTHENTICATED and "missing API key" in missing.value.message
    assert refused.value.status is Status.UNAUTHENTICATED and refused.value.message == "invalid API key"
    assert listed[0] == 0 and "blazerpc.InferenceService" in listed[1]
    assert called[0] == 0 and '"result": "g"' in called[1]
    assert unauthenticated[0] != 0 and "Unauthenticated" in unauthenticated[1]


async def _grpcurl(port: int, *args: str) -> tuple[int, str]:
    if args and args[-1].startswith("Predict"):
        args = (*args[:-1], f"127.0.0.1:{port}", f"blazerpc.InferenceService/{args[-1]}")
    else:
        args = (f"127.0.0.1:{port}", *args)
    proc = await asyncio.create_subprocess_exec(
        GRPCURL, "-plaintext", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out = (await proc.communicate())[0].decode()
    return proc.returncode or 0, out


async def test_the_llm_server_takes_the_openai_client_s_api_key(tiny_dir: Path) -> None:
    service = LLMService(tiny_dir, EngineConfig(kv_cache_mb=16, max_model_len=512, max_num_seqs=4))
    body = {"prompt": "hi", "max_tokens": 2, "ignore_eos": True}
    async with (
        serving(service.app, api_keys=KEYS) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}", timeout=60) as http,
    ):
        base_url = f"http://127.0.0.1:{server.http_port}/v1"
        async with openai.AsyncOpenAI(base_url=base_url, api_key="key-one") as client:
            model = (await client.models.list()).data[0].id
            reply = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=2
            )
            assert reply.usage is not None and reply.usage.completion_tokens == 2
        async with openai.AsyncOpenAI(base_url=base_url, api_key="wrong", max_retries=0) as client:
            with pytest.raises(openai.AuthenticationError) as refused:
                await client.models.list()
        raw = await http.post("/v1/completions", json={"model": model, "prompt": "hi"})
        generate = await http.post("/generate", json=body)
        generate_ok = await http.post("/generate", json=body, headers=bearer("key-two"))
        async with BlazeClient("127.0.0.1", server.grpc_port, timeout=60) as anonymous:
            with pytest.raises(BlazeError) as grpc_refused:
                await anext(aiter(anonymous.stream("generate", **body)))
        async with BlazeClient("127.0.0.1", server.grpc_port, timeout=60, api_key="key-one") as client:
            assert len([c async for c in client.stream("generate", **body)]) == 2
        assert (await http.get("/ready")).status_code == 200
    assert refused.value.status_code == 401
    assert refused.value.body == {"message": "invalid API key", "type": "authentication_error", "param": None,
                                  "code": "invalid_api_key"}  # fmt: skip
    assert raw.status_code == 401 and raw.headers["www-authenticate"] == "Bearer"
    assert raw.json()["error"]["code"] == "invalid_api_key" and set(raw.json()["error"]) == {
        "message", "type", "param", "code"}  # fmt: skip
    assert generate.status_code == 401 and generate_ok.json()["num_tokens"] == 2
    assert grpc_refused.value.status is Status.UNAUTHENTICATED


def test_keys_come_from_blaze_api_keys_when_none_are_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLAZE_API_KEYS", " a1 , b2,,")
    assert api_keys_from_env() == ("a1", "b2")
    monkeypatch.setenv("BLAZE_API_KEYS", "has space")
    with pytest.raises(ValueError, match="no spaces or commas"):
        api_keys_from_env()
    monkeypatch.delenv("BLAZE_API_KEYS")
    assert api_keys_from_env() == ()


async def test_a_server_without_api_keys_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLAZE_API_KEYS", "env-key")
    async with (
        serving(make_app(), grpc_port=None) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http,
    ):
        assert (await http.post("/echo", json={"text": "x"})).status_code == 401
        assert (await http.post("/echo", json={"text": "x"}, headers=bearer("env-key"))).status_code == 200
    async with (
        serving(make_app(), grpc_port=None, api_keys=()) as server,  # () says: no keys, whatever the env
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http,
    ):
        assert (await http.post("/echo", json={"text": "x"})).status_code == 200


def test_bad_keys_are_refused_with_a_fix() -> None:
    for keys in (("",), ("two words",), ("a,b",), ("ключ",)):
        with pytest.raises(ValueError, match="openssl rand"):
            ServeConfig(api_keys=keys)
    with pytest.raises(ValueError, match="not one string"):
        ServeConfig(api_keys="abc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one key"):
        ApiKeyAuth([])


def test_every_key_is_compared_whichever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[bytes] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return real(a, b)

    auth = ApiKeyAuth(["k1", "k2", "k3"])
    monkeypatch.setattr("blazerpc.auth.hmac.compare_digest", spy)
    auth.before(Context("grpc", "/m", "/m", "id", raw_metadata=_Metadata(authorization="Bearer k1")))
    assert compared == [b"k1", b"k2", b"k3"]


class _Metadata(dict[str, str]):
    """What grpclib hands over: a mapping with ``items()``."""

    def __init__(self, **values: str) -> None:
        super().__init__(values)

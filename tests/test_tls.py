"""TLS on both transports: curl, grpcurl, the openai client and BlazeClient over real handshakes,
mutual TLS, clients that speak plain text or never handshake, the connection budget, bad files."""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trustme

from blazerpc import BlazeClient, BlazeError, BlazeServer, ServeConfig, Status
from blazerpc.llm.config import EngineConfig
from blazerpc.llm_app.service import LLMService
from blazerpc.tls import client_context
from tests.apps import make_app
from tests.conftest import ROOT, blaze, free_port, serving, until
from tests.doc_commands import code_blocks, run_doc_command
from tests.grpc.test_interop import GRPCURL


@dataclass(frozen=True)
class Certs:
    ca: str  # signed the server's and the client's certificates
    server: str  # the server's certificate (127.0.0.1, localhost) and key, one file
    server_cert: str
    server_key: str
    client: str  # a client certificate signed by ``ca``, with its key
    stranger: str  # a client certificate from another CA
    garbage: str


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    d = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    server.private_key_and_cert_chain_pem.write_to_path(str(d / "server.pem"))
    server.cert_chain_pems[0].write_to_path(str(d / "server.crt"))
    server.private_key_pem.write_to_path(str(d / "server.key"))
    ca.issue_cert("client@example.com", common_name="client-1").private_key_and_cert_chain_pem.write_to_path(
        str(d / "client.pem")
    )
    trustme.CA().issue_cert("x@example.com").private_key_and_cert_chain_pem.write_to_path(str(d / "stranger.pem"))
    (d / "garbage.pem").write_text("not a certificate\n")
    names = ("ca.pem", "server.pem", "server.crt", "server.key", "client.pem", "stranger.pem", "garbage.pem")
    return Certs(*(str(d / name) for name in names))


@asynccontextmanager
async def tls_serving(certs: Certs, **options: Any) -> AsyncIterator[BlazeServer]:
    async with serving(make_app(), ssl_certfile=certs.server, **options) as server:
        yield server


def trusting(certs: Certs) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certs.ca)


async def run(*argv: str) -> tuple[int, str]:
    """A command's exit status and its stdout and stderr together."""
    proc = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = (await proc.communicate())[0].decode()
    return proc.returncode or 0, out


def curl(port: int, path: str, *flags: str, body: str | None = None) -> list[str]:
    data = ["-H", "Content-Type: application/json", "-d", body] if body is not None else []
    return ["curl", "-sS", *flags, *data, f"https://127.0.0.1:{port}{path}"]


def grpcurl(port: int, *flags: str, body: str = '{"text": "g"}') -> list[str]:
    return [GRPCURL, *flags, "-d", body, f"127.0.0.1:{port}", "blazerpc.InferenceService/PredictEcho"]


async def test_https_answers_json_and_an_event_stream_to_curl_with_the_ca(certs: Certs) -> None:
    async with tls_serving(certs) as server:
        port = server.http_port
        unary = await run(*curl(port, "/echo", "--cacert", certs.ca, "-v", body='{"text": "hi"}'))
        stream = '{"prompt": "p", "n": 2, "stream": true}'
        events = await run(*curl(port, "/generate", "--cacert", certs.ca, "-N", body=stream))
        untrusted = await run(*curl(port, "/echo", body='{"text": "hi"}'))
        plain = await run("curl", "-sS", f"http://127.0.0.1:{port}/health")
        still = await run(*curl(port, "/health", "--cacert", certs.ca))
    assert unary[0] == 0 and unary[1].rstrip().endswith('{"result":"hi"}')
    assert "ALPN: server accepted http/1.1" in unary[1] and "TLSv1.3" in unary[1]
    assert events[0] == 0 and events[1].count("data: ") == 3 and events[1].endswith("data: [DONE]\n\n")
    assert '"token": "p1"' in events[1]
    assert untrusted[0] == 60, untrusted  # curl: the peer's certificate cannot be verified
    assert plain[0] == 52, plain  # curl: empty reply from server
    assert still == (0, '{"status":"ok"}')


async def test_grpc_over_tls_answers_grpcurl_with_the_ca(certs: Certs) -> None:
    async with tls_serving(certs) as server:
        port = server.grpc_port
        called = await run(*grpcurl(port, "-cacert", certs.ca))
        listed = await run(GRPCURL, "-cacert", certs.ca, f"127.0.0.1:{port}", "list")
        plaintext = await run(*grpcurl(port, "-plaintext", "-connect-timeout", "2"))
        untrusted = await run(*grpcurl(port, "-connect-timeout", "2"))
    assert called[0] == 0 and '"result": "g"' in called[1]
    assert listed[0] == 0 and "blazerpc.InferenceService" in listed[1]
    assert plaintext[0] != 0 and untrusted[0] != 0
    assert "certificate signed by unknown authority" in untrusted[1]


async def test_each_transport_negotiates_its_protocol_by_alpn(certs: Certs) -> None:
    def negotiated(port: int) -> str | None:
        context = trusting(certs)
        context.set_alpn_protocols(["h2", "http/1.1"])
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            return tls.selected_alpn_protocol()

    async with tls_serving(certs) as server:
        grpc = await asyncio.to_thread(negotiated, server.grpc_port)
        http = await asyncio.to_thread(negotiated, server.http_port)
    assert (grpc, http) == ("h2", "http/1.1")


async def test_blaze_client_calls_over_tls_with_a_ca_file_or_a_context_and_an_api_key(certs: Certs) -> None:
    async with tls_serving(certs, api_keys=("key-one",)) as server:
        port = server.grpc_port
        async with BlazeClient("127.0.0.1", port, tls=certs.ca, api_key="key-one", timeout=10) as client:
            assert await client.predict("echo", text="hi") == "hi"
            assert [c["token"] async for c in client.stream("generate", prompt="p", n=3)] == ["p0", "p1", "p2"]
        async with BlazeClient("localhost", port, tls=trusting(certs), api_key="key-one", timeout=10) as client:
            assert await client.predict("add", a=1, b=2) == 3
        async with BlazeClient("127.0.0.1", port, tls=certs.ca, timeout=10) as keyless:
            with pytest.raises(BlazeError) as unauthenticated:
                await keyless.predict("echo", text="hi")
        async with BlazeClient("127.0.0.1", port, tls=True, timeout=10) as system_roots:
            with pytest.raises(BlazeError) as untrusted:
                await system_roots.predict("echo", text="hi")
        async with BlazeClient("127.0.0.1", port, timeout=2) as plain:
            with pytest.raises(BlazeError) as refused:
                await plain.predict("echo", text="hi")
    assert unauthenticated.value.status is Status.UNAUTHENTICATED
    assert untrusted.value.status is Status.UNAVAILABLE and "CERTIFICATE_VERIFY_FAILED" in untrusted.value.message
    assert refused.value.status is Status.UNAVAILABLE  # a plain client on a TLS port


async def test_mutual_tls_serves_clients_with_a_certificate_from_the_ca_and_refuses_others(certs: Certs) -> None:
    async with tls_serving(certs, ssl_ca_certs=certs.ca) as server:
        grpc_port, http_port = server.grpc_port, server.http_port
        async with BlazeClient("127.0.0.1", grpc_port, tls=certs.ca, certfile=certs.client, timeout=10) as client:
            assert await client.predict("echo", text="hi") == "hi"
            assert len([c async for c in client.stream("generate", prompt="p", n=2)]) == 2
        refusals = []
        for certfile in (None, certs.stranger):
            async with BlazeClient("127.0.0.1", grpc_port, tls=certs.ca, certfile=certfile, timeout=10) as other:
                with pytest.raises(BlazeError) as refused:
                    await other.predict("echo", text="hi")
                refusals.append(refused.value)
        trusted = ("--cacert", certs.ca)
        with_cert = await run(*curl(http_port, "/echo", *trusted, "--cert", certs.client, body='{"text": "m"}'))
        without = await run(*curl(http_port, "/echo", *trusted, body='{"text": "m"}'))
        stranger = await run(*curl(http_port, "/echo", *trusted, "--cert", certs.stranger, body='{"text": "m"}'))
        grpcurl_cert = await run(*grpcurl(grpc_port, "-cacert", certs.ca, "-cert", certs.client, "-key", certs.client))
        async with httpx.AsyncClient(verify=trusting(certs)) as anonymous:
            with pytest.raises(httpx.TransportError):
                await anonymous.get(f"https://127.0.0.1:{http_port}/health")
        await until(lambda: len(server.connections) == 0)  # refused handshakes hold no place
    assert [r.status for r in refusals] == [Status.UNAVAILABLE] * 2
    assert with_cert == (0, '{"result":"m"}')
    assert without[0] != 0 and stranger[0] != 0 and "result" not in without[1] + stranger[1]
    assert grpcurl_cert[0] == 0 and '"result": "g"' in grpcurl_cert[1]


async def test_a_plain_http_client_on_the_tls_port_fails_and_the_server_keeps_serving(certs: Certs) -> None:
    async with tls_serving(certs, grpc_port=None) as server, httpx.AsyncClient(timeout=5) as plain:
        for _ in range(3):
            with pytest.raises(httpx.TransportError):
                await plain.get(f"http://127.0.0.1:{server.http_port}/health")
        async with httpx.AsyncClient(verify=trusting(certs)) as https:
            assert (await https.post(f"https://127.0.0.1:{server.http_port}/echo", json={"text": "ok"})).json() == {
                "result": "ok"
            }
        await until(lambda: len(server.connections) == 0 and not server.connections.handshakes)


async def test_a_client_that_never_finishes_its_handshake_is_counted_then_closed(certs: Certs) -> None:
    """asyncio would give it 60 s, outside the budget; the budget counts it from accept on and
    closes it after the idle timeout."""
    async with tls_serving(certs, idle_timeout_s=0.5) as server:
        loop = asyncio.get_running_loop()
        silent = [socket.create_connection(("127.0.0.1", port)) for port in (server.http_port, server.grpc_port)]
        try:
            await until(lambda: len(server.connections) == 2)
            for sock in silent:
                sock.setblocking(False)
                assert await asyncio.wait_for(loop.sock_recv(sock, 1), 5) == b""  # the server hung up
            await until(lambda: len(server.connections) == 0)
        finally:
            for sock in silent:
                sock.close()


async def test_handshakes_count_in_the_budget_and_the_longest_idle_makes_room(certs: Certs) -> None:
    async with tls_serving(certs, max_connections=2) as server:
        loop = asyncio.get_running_loop()
        silent = [socket.create_connection(("127.0.0.1", server.http_port)) for _ in range(2)]
        try:
            await until(lambda: len(server.connections) == 2)
            async with httpx.AsyncClient(verify=trusting(certs)) as https:  # over budget: the oldest goes
                assert (await https.get(f"https://127.0.0.1:{server.http_port}/health")).status_code == 200
            silent[0].setblocking(False)
            assert await asyncio.wait_for(loop.sock_recv(silent[0], 1), 5) == b""
            assert len(server.connections) == 2
        finally:
            for sock in silent:
                sock.close()


async def test_an_idle_tls_connection_is_closed_without_waiting_for_the_client(certs: Certs) -> None:
    """A TLS close waits up to 30 s for the client's close_notify with the descriptor open; the
    budget shuts the socket down instead, so a client that never reads cannot hold it."""

    def handshake(port: int) -> ssl.SSLSocket:
        return trusting(certs).wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1")

    async with tls_serving(certs, grpc_idle_timeout_s=0.5) as server:
        connected = await asyncio.to_thread(handshake, server.grpc_port)
        try:
            await until(lambda: len(server.connections) == 1 and not server.connections.handshakes)
            [server_side] = server.connections.tls_sockets.values()
            await until(lambda: len(server.connections) == 0, timeout=5)  # idle past 0.5 s
            await until(lambda: server_side.fileno() == -1, timeout=3)  # the server's descriptor is closed
        finally:
            connected.close()


async def test_the_openai_client_talks_to_the_llm_server_over_tls(certs: Certs, tiny_dir: Path) -> None:
    """A stream with the async client, then docs/production.md's example as written."""
    service = LLMService(tiny_dir, EngineConfig(kv_cache_mb=16, max_model_len=512, max_num_seqs=4))
    async with serving(service.app, ssl_certfile=certs.server) as server:
        base_url = f"https://127.0.0.1:{server.http_port}/v1"
        http_client = openai.DefaultAsyncHttpxClient(verify=trusting(certs))
        async with openai.AsyncOpenAI(base_url=base_url, api_key="none", http_client=http_client) as client:
            model = (await client.models.list()).data[0].id
            stream = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=3, stream=True
            )
            chunks = [chunk async for chunk in stream]
        assert chunks and chunks[-1].choices[0].finish_reason == "length"
        example = tls_docs("python")[2].replace("localhost:8000", f"localhost:{server.http_port}")
        assert await run(sys.executable, "-c", example.replace('"ca.pem"', repr(certs.ca))) == (0, "8\n")


def tls_docs(language: str) -> list[str]:
    """The code blocks of docs/production.md's TLS section."""
    return code_blocks((ROOT / "docs" / "production.md").read_text().split("\n## TLS\n")[1], language)


def test_the_tls_docs_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, process_cleanup: list) -> None:
    make_files, client, _, mutual_client = tls_docs("python")
    serve, calls, mutual_serve, mutual_calls = tls_docs("shell")
    monkeypatch.chdir(tmp_path)  # the files the example makes, where the commands look for them
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # for examples.tenants
    subprocess.run([sys.executable, "-c", make_files], check=True, timeout=30)

    def serve_and_call(serve: str, calls: str, client: str, client_cert: Path | None = None) -> list[str]:
        """What each call printed, then the server's log."""
        grpc_port, http_port = free_port(), free_port()
        argv = [*serve.split()[1:], "--port", str(grpc_port), "--http-port", str(http_port)]
        process_cleanup.append(server := blaze(*argv, cwd=tmp_path))
        _wait_https_ready(http_port, tmp_path / "ca.pem", client_cert)
        outputs = [run_doc_command(line, grpc_port, http_port) for line in calls.strip().splitlines()]
        done = subprocess.run([sys.executable, "-c", client.replace("50051", str(grpc_port))],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        server.terminate()
        return [*outputs, done.stdout, server.communicate(timeout=10)[0]]

    plain = serve_and_call(serve, calls, client)
    mutual = serve_and_call(mutual_serve, mutual_calls, mutual_client, client_cert=tmp_path / "client.pem")
    for curled, grpcurled, _, _ in (plain, mutual):
        assert curled.startswith('{"text":"hi","tenant":"anonymous","request_id":"')
        assert '"tenant": "anonymous"' in grpcurled
    assert plain[2] == "hi anonymous\n" and "gRPC (TLS) on" in plain[3] and "HTTP on https://" in plain[3]
    assert mutual[2].startswith("{'text': 'hi', 'tenant': 'anonymous', 'request_id': ")
    assert "gRPC (mutual TLS) on" in mutual[3]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--ssl-certfile", "{garbage}"), "ssl_certfile: no PEM certificate in"),
        (("--ssl-certfile", "{server_cert}"), "ssl_certfile: no private key in"),
        (("--ssl-certfile", "{server_cert}", "--ssl-keyfile", "{garbage}"), "ssl_keyfile: no PEM private key in"),
        (("--ssl-certfile", "{server_cert}", "--ssl-keyfile", "{client}"), "does not match the certificate"),
        (("--ssl-certfile", "{server}", "--ssl-ca-certs", "{garbage}"), "ssl_ca_certs: no PEM CA certificate in"),
        (("--ssl-certfile", "{missing}"), "ssl_certfile: no such file"),
    ],
)
def test_blaze_serve_says_which_tls_file_is_wrong(certs: Certs, flags: tuple[str, ...], message: str) -> None:
    paths = {**certs.__dict__, "missing": certs.ca + ".missing"}
    argv = [flag.format(**paths) for flag in flags]
    done = subprocess.run([sys.executable, "-m", "blazerpc.cli", "serve", "tests.apps:app", *argv],
                          capture_output=True, text=True, timeout=30, cwd=ROOT,
                          env={**os.environ, "COLUMNS": "500"})  # fmt: skip
    assert done.returncode == 2 and message in " ".join(done.stderr.replace("│", " ").split()), done.stderr
    assert "Traceback" not in done.stderr


def test_an_encrypted_key_is_refused_rather_than_prompted_for(certs: Certs, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(Path(certs.server_key).read_bytes(), None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(ValueError, match="is encrypted; give it unencrypted"):
        ServeConfig(ssl_certfile=certs.server_cert, ssl_keyfile=str(encrypted))


def test_the_client_context_refuses_what_it_cannot_use(certs: Certs) -> None:
    with pytest.raises(ValueError, match="need tls"):
        BlazeClient(certfile=certs.client)
    with pytest.raises(ValueError, match="load the client certificate into it"):
        client_context(trusting(certs), certfile=certs.client)
    with pytest.raises(ValueError, match="tls: no PEM CA certificate"):
        BlazeClient(tls=certs.garbage)
    context = client_context(certs.ca, certs.client)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2


def test_the_budget_holds_with_tls_under_a_low_file_limit(certs: Certs, process_cleanup: list) -> None:
    """300 sockets that never handshake against ``ulimit -n 256``: each is counted from accept on,
    so the oldest make room and health still answers over TLS on both ports."""
    http_port, grpc_port = free_port(), free_port()

    def low_file_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    ports = ("--http-port", str(http_port), "--port", str(grpc_port))
    server = blaze("serve", "tests.apps:app", "--host", "127.0.0.1", *ports, "--ssl-certfile", certs.server,
                   preexec_fn=low_file_limit)  # fmt: skip
    process_cleanup.append(server)
    _wait_https_ready(http_port, Path(certs.ca))
    silent = [socket.create_connection(("127.0.0.1", port)) for port in (http_port, grpc_port) * 150]
    try:
        health = [GRPCURL, "-cacert", certs.ca, f"127.0.0.1:{grpc_port}", "grpc.health.v1.Health/Check"]
        for _ in range(3):
            assert httpx.get(f"https://127.0.0.1:{http_port}/health", verify=trusting(certs), timeout=5).is_success
            assert '"status": "SERVING"' in subprocess.run(health, capture_output=True, text=True, timeout=10).stdout
    finally:
        for sock in silent:
            sock.close()
    server.terminate()
    output, _ = server.communicate(timeout=10)
    assert "gRPC (TLS) on 127.0.0.1" in output and f"HTTP on https://127.0.0.1:{http_port}" in output
    assert "Traceback" not in output and "out of file descriptors" not in output and "out of system" not in output


def _wait_https_ready(port: int, ca: Path, client_cert: Path | None = None, timeout: float = 60.0) -> None:
    """Poll the readiness endpoint over HTTPS (with a client certificate for mutual TLS)."""
    trust = ssl.create_default_context(cafile=str(ca))
    if client_cert is not None:
        trust.load_cert_chain(str(client_cert))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"https://127.0.0.1:{port}/ready", verify=trust, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"server on port {port} not ready after {timeout}s")

"""The ``blaze`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .auth import api_keys_from_env
from .logs import configure_logging
from .protobuf.descriptors import build_file
from .protobuf.render import render_proto
from .ray_serve.cli import ray_cli
from .serving import ServeConfig, run
from .workers import import_app, run_with_reload, run_workers

cli = typer.Typer(help="Serve Python models and LLMs over gRPC and HTTP.", no_args_is_help=True, add_completion=False)
cli.add_typer(ray_cli)  # blaze ray serve|llm: scaled out on Ray Serve (docs/scaling.md)

# Options both serving commands take (docs/limits.md says what a client sees at each limit).
MAX_BODY_HELP = "HTTP bodies and gRPC messages larger than this are refused unread (413 / RESOURCE_EXHAUSTED)."
MaxConnections = Annotated[
    int,
    typer.Option(
        min=0,
        help="Open connections, HTTP and gRPC together; over it the longest-idle one is closed, or, all busy, "
        "the new one refused (0: the open-file limit less 64).",
    ),
]
IdleTimeout = Annotated[
    float,
    typer.Option(min=0.1, help="Seconds an HTTP connection may sit with no request in flight (or a head arriving)."),
]
GrpcIdleTimeout = Annotated[float, typer.Option(min=0.1, help="Seconds a gRPC connection may sit with no call.")]
BodyTimeout = Annotated[
    float, typer.Option(min=0.1, help="Seconds to wait for the next piece of a request body (408) or message.")
]
# Options for production (docs/production.md).
ApiKey = Annotated[
    list[str] | None,
    typer.Option(
        "--api-key",
        help="Require 'Authorization: Bearer KEY' on every call (HTTP header or gRPC metadata); repeat for "
        "several keys. Default: the comma-separated keys of BLAZE_API_KEYS, if set. /health, /ready and gRPC "
        "health and reflection stay open.",
    ),
]
ProtectDocs = Annotated[
    bool,
    typer.Option("--protect-docs", help="With API keys, require one for /docs, /redoc and /openapi.json too."),
]
AccessLog = Annotated[bool, typer.Option(help="Log one line per call: transport, method, status, latency, request id.")]
Metrics = Annotated[bool, typer.Option(help="Serve Prometheus metrics at GET /metrics on the HTTP port.")]
MetricsPort = Annotated[
    int | None,
    typer.Option(
        min=0, max=65535, help="Serve /metrics on this port too (for a server without HTTP, or a scraper kept apart)."
    ),
]
SslCertfile = Annotated[
    Path | None,
    typer.Option(help="Serve both transports over TLS with this certificate chain (PEM); gRPC negotiates h2 by ALPN."),
]
SslKeyfile = Annotated[Path | None, typer.Option(help="The certificate's private key (PEM), if not in --ssl-certfile.")]
SslCaCerts = Annotated[
    Path | None,
    typer.Option(help="Require client certificates signed by these CAs (PEM): mutual TLS. Needs --ssl-certfile."),
]
SsePingInterval = Annotated[
    float,
    typer.Option(
        min=0,
        help="Seconds an event stream may send nothing (queued, long prefill) before it gets an SSE comment "
        "': ping', which clients ignore and proxies count as traffic (0: never).",
    ),
]


@cli.command()
def serve(
    app: Annotated[str, typer.Argument(help="The app to serve, as module:attribute (e.g. app:app).")],
    host: Annotated[str, typer.Option(help="Address to bind.")] = "0.0.0.0",
    port: Annotated[int, typer.Option(help="gRPC port.")] = 50051,
    http_port: Annotated[int, typer.Option(help="HTTP port (JSON, SSE, /docs).")] = 8000,
    grpc: Annotated[bool, typer.Option(help="Serve gRPC.")] = True,
    http: Annotated[bool, typer.Option(help="Serve HTTP.")] = True,
    workers: Annotated[int, typer.Option(min=1, help="Processes sharing the ports (SO_REUSEPORT).")] = 1,
    reload: Annotated[bool, typer.Option(help="Restart when a .py file under the current directory changes.")] = False,
    grace_period: Annotated[float, typer.Option(min=0, help="Seconds in-flight calls get on shutdown.")] = 10.0,
    max_body_mb: Annotated[float, typer.Option(help=MAX_BODY_HELP)] = 32.0,
    max_connections: MaxConnections = 0,
    idle_timeout: IdleTimeout = 15.0,
    grpc_idle_timeout: GrpcIdleTimeout = 300.0,
    body_timeout: BodyTimeout = 30.0,
    api_key: ApiKey = None,
    protect_docs: ProtectDocs = False,
    access_log: AccessLog = True,
    metrics: Metrics = True,
    metrics_port: MetricsPort = None,
    ssl_certfile: SslCertfile = None,
    ssl_keyfile: SslKeyfile = None,
    ssl_ca_certs: SslCaCerts = None,
    sse_ping_interval: SsePingInterval = 15.0,
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "info",
) -> None:
    """Serve an app's models over gRPC and HTTP until SIGINT or SIGTERM."""
    configure_logging(log_level)
    try:
        config = ServeConfig(
            host=host,
            grpc_port=port if grpc else None,
            http_port=http_port if http else None,
            grace_period=grace_period,
            max_body_mb=max_body_mb,
            max_connections=max_connections,
            idle_timeout_s=idle_timeout,
            grpc_idle_timeout_s=grpc_idle_timeout,
            body_timeout_s=body_timeout,
            api_keys=_api_keys(api_key),
            protect_docs=protect_docs,
            access_log=access_log,
            metrics=metrics,
            metrics_port=metrics_port,
            ssl_certfile=_path(ssl_certfile),
            ssl_keyfile=_path(ssl_keyfile),
            ssl_ca_certs=_path(ssl_ca_certs),
            sse_ping_interval_s=sse_ping_interval,
        )
        if reload and workers > 1:
            raise ValueError("--reload and --workers cannot be combined")
        if reload:
            raise typer.Exit(run_with_reload(app, config, Path.cwd()))
        if workers > 1:
            raise typer.Exit(run_workers(app, config, workers))
        blaze_app = import_app(app)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    run(blaze_app, config)


@cli.command()
def proto(
    app: Annotated[str, typer.Argument(help="The app, as module:attribute.")],
    output_dir: Annotated[Path, typer.Option(help="Where to write blazerpc.proto.")] = Path("."),
) -> None:
    """Write the app's .proto file (package blazerpc, service InferenceService)."""
    try:
        blaze_app = import_app(app)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "blazerpc.proto"
    path.write_text(render_proto(build_file(blaze_app.registry)))
    typer.echo(f"wrote {path}")


@cli.command()
def llm(
    model: Annotated[
        Path | None, typer.Option(help="A GGUF file or a Hugging Face directory (default: SmolLM2-135M-Instruct).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "0.0.0.0",
    port: Annotated[int, typer.Option(help="HTTP port (POST /generate, SSE, /docs).")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="gRPC port (PredictGenerate).")] = 50051,
    grpc: Annotated[bool, typer.Option(help="Serve gRPC too.")] = True,
    demo: Annotated[bool, typer.Option(help="Stream one answer in the terminal instead of serving.")] = False,
    prompt: Annotated[str, typer.Option(help="The --demo prompt.")] = "Explain in two sentences why the sky is blue.",
    max_tokens: Annotated[int, typer.Option(min=1, help="The --demo answer's length limit.")] = 128,
    threads: Annotated[int, typer.Option(min=0, help="Torch threads (0: torch's default).")] = 0,
    dtype: Annotated[
        str,
        typer.Option(
            help="Weights and KV cache: auto (bfloat16 where the CPU or GPU has bf16 instructions, else float32), "
            "float32 (matches the reference implementation exactly) or bfloat16."
        ),
    ] = "auto",
    weights: Annotated[
        str,
        typer.Option(
            help="Weights decode steps read: auto (int4 on a CPU where the native kernels run, unless --dtype "
            "float32; else full), full (the --dtype matrices), int8 or int4 (quantized in groups of 32; the LM "
            "head stays 8-bit). Prefill and steps of more than 8 streams use the --dtype matrices."
        ),
    ] = "auto",
    max_num_seqs: Annotated[int, typer.Option(min=1, help="Sequences decoded together.")] = 32,
    max_waiting: Annotated[int, typer.Option(min=1, help="Queued requests before 429.")] = 256,
    max_num_batched_tokens: Annotated[
        int,
        typer.Option(
            min=1,
            help="Tokens computed per step: one per decoding stream, prompt chunks in the rest (at least "
            "--max-num-seqs). A longer prompt is prefilled in chunks over several steps while running streams "
            "keep decoding; smaller bounds their inter-token latency tighter, larger gives prompts their first "
            "token sooner.",
        ),
    ] = 128,
    prefix_caching: Annotated[
        bool, typer.Option(help="Reuse the KV cache of prompt prefixes seen before (system prompts, earlier turns).")
    ] = True,
    max_model_len: Annotated[int, typer.Option(min=16, help="Context length (prompt + answer).")] = 2048,
    kv_cache_mb: Annotated[int, typer.Option(min=1, help="KV cache budget in MiB.")] = 1024,
    grace_period: Annotated[float, typer.Option(min=0, help="Seconds in-flight calls get on shutdown.")] = 10.0,
    max_body_mb: Annotated[float, typer.Option(help=MAX_BODY_HELP)] = 4.0,
    max_connections: MaxConnections = 0,
    idle_timeout: IdleTimeout = 15.0,
    grpc_idle_timeout: GrpcIdleTimeout = 300.0,
    body_timeout: BodyTimeout = 30.0,
    startup_timeout: Annotated[
        float, typer.Option(min=0, help="Seconds a request that arrives while the model loads waits for it.")
    ] = 120.0,
    max_engine_restarts: Annotated[
        int,
        typer.Option(
            min=0, help="Restarts of a dead engine process allowed within --engine-restart-window; one more exits 1."
        ),
    ] = 5,
    engine_restart_window: Annotated[float, typer.Option(min=1, help="Seconds (see --max-engine-restarts).")] = 60.0,
    api_key: ApiKey = None,
    protect_docs: ProtectDocs = False,
    access_log: AccessLog = True,
    metrics: Metrics = True,
    metrics_port: MetricsPort = None,
    ssl_certfile: SslCertfile = None,
    ssl_keyfile: SslKeyfile = None,
    ssl_ca_certs: SslCaCerts = None,
    sse_ping_interval: SsePingInterval = 15.0,
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "info",
) -> None:
    """Serve the built-in LLM (or --model) over HTTP and gRPC, or stream one answer with --demo.

    The engine runs in its own process; if it dies, requests in flight end with UNAVAILABLE
    (503), readiness goes off, and it is restarted with backoff.
    """
    configure_logging(log_level)
    from .llm.client import RestartPolicy
    from .llm.config import EngineConfig
    from .llm_app.service import LLMService

    try:
        config = EngineConfig(
            max_num_seqs=max_num_seqs,
            max_waiting=max_waiting,
            max_num_batched_tokens=max_num_batched_tokens,
            prefix_caching=prefix_caching,
            max_model_len=max_model_len,
            kv_cache_mb=kv_cache_mb,
            dtype=dtype,
            weights=weights,
            threads=threads or None,
        )
        restart = RestartPolicy(max_restarts=max_engine_restarts, window_s=engine_restart_window)
        service = LLMService(model, config, restart, startup_timeout)
        if demo:
            from .llm_app.demo import run_demo

            raise typer.Exit(run_demo(service.door, prompt, max_tokens))
        serve_config = ServeConfig(
            host=host,
            grpc_port=grpc_port if grpc else None,
            http_port=port,
            grace_period=grace_period,
            max_body_mb=max_body_mb,
            max_connections=max_connections,
            idle_timeout_s=idle_timeout,
            grpc_idle_timeout_s=grpc_idle_timeout,
            body_timeout_s=body_timeout,
            api_keys=_api_keys(api_key),
            protect_docs=protect_docs,
            access_log=access_log,
            metrics=metrics,
            metrics_port=metrics_port,
            ssl_certfile=_path(ssl_certfile),
            ssl_keyfile=_path(ssl_keyfile),
            ssl_ca_certs=_path(ssl_ca_certs),
            sse_ping_interval_s=sse_ping_interval,
        )
    except (ValueError, FileNotFoundError) as exc:
        raise typer.BadParameter(str(exc)) from None
    run(service.app, serve_config)


def _api_keys(given: list[str] | None) -> tuple[str, ...]:
    """``--api-key`` values if any were given, else those of ``BLAZE_API_KEYS`` (possibly none)."""
    return tuple(given) if given else api_keys_from_env()


def _path(path: Path | None) -> str | None:
    return None if path is None else str(path)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()

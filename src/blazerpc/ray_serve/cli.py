"""``blaze ray serve`` and ``blaze ray llm``: the two serving commands, scaled out on Ray Serve.

Ray is imported only when a command runs, so ``blaze --help`` works without the ``ray`` extra.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..auth import api_keys_from_env
from ..logs import configure_logging
from ..serving import ServeConfig

if TYPE_CHECKING:
    from .deployment import BlazeDeployment, ReplicaConfig
    from .runner import RayCluster

log = logging.getLogger("blazerpc")

ray_cli = typer.Typer(
    name="ray",
    help="Serve on a Ray cluster with Ray Serve: replicas, autoscaling (needs the ray extra; docs/scaling.md).",
    no_args_is_help=True,
)

Replicas = Annotated[int, typer.Option(min=1, help="Replicas (without --min/--max-replicas).")]
MinReplicas = Annotated[
    int | None, typer.Option(min=0, help="Autoscale between this and --max-replicas on calls in flight.")
]
MaxReplicas = Annotated[int | None, typer.Option(min=1, help="Autoscaling's upper bound (with --min-replicas).")]
TargetOngoing = Annotated[
    float | None, typer.Option(min=0.1, help="Autoscaling adds replicas above this many calls in flight per replica.")
]
CpusPerReplica = Annotated[float, typer.Option(min=0, help="CPUs Ray reserves for each replica (fractions allowed).")]
MaxOngoing = Annotated[
    int | None, typer.Option(min=1, help="Calls a replica takes at once; Ray's router queues the rest.")
]
Address = Annotated[
    str | None,
    typer.Option(
        help="Join a running Ray cluster ('auto', or 'ray://host:10001'); default: start a local Ray instance."
    ),
]
NumCpus = Annotated[int | None, typer.Option(min=1, help="CPUs of the local Ray instance (default: all).")]
Host = Annotated[str, typer.Option(help="Address Ray Serve's proxies bind.")]
HttpPort = Annotated[int, typer.Option(help="Ray Serve's HTTP proxy port (JSON, SSE, /docs).")]
GrpcPort = Annotated[int, typer.Option(help="Ray Serve's gRPC proxy port.")]
Grpc = Annotated[bool, typer.Option(help="Start Ray Serve's gRPC proxy with our service.")]
Name = Annotated[str, typer.Option(help="The Ray Serve application and deployment name.")]
GracePeriod = Annotated[float, typer.Option(min=0, help="Seconds in-flight calls get when a replica stops.")]
ApiKey = Annotated[
    list[str] | None,
    typer.Option("--api-key", help="Require 'Authorization: Bearer KEY' (default: BLAZE_API_KEYS); repeatable."),
]
AccessLog = Annotated[bool, typer.Option(help="Log one line per call in the replica's log.")]
LogLevel = Annotated[str, typer.Option(help="Logging level.")]


@ray_cli.command("serve")
def serve(
    app: Annotated[str, typer.Argument(help="The app to serve, as module:attribute (e.g. app:app).")],
    replicas: Replicas = 1,
    min_replicas: MinReplicas = None,
    max_replicas: MaxReplicas = None,
    target_ongoing_requests: TargetOngoing = None,
    cpus_per_replica: CpusPerReplica = 1.0,
    max_ongoing_requests: MaxOngoing = None,
    address: Address = None,
    num_cpus: NumCpus = None,
    host: Host = "0.0.0.0",
    http_port: HttpPort = 8000,
    grpc_port: GrpcPort = 50051,
    grpc: Grpc = True,
    name: Name = "blazerpc",
    grace_period: GracePeriod = 10.0,
    api_key: ApiKey = None,
    access_log: AccessLog = True,
    log_level: LogLevel = "info",
) -> None:
    """Serve an app's models from Ray Serve replicas until SIGINT or SIGTERM, then remove them."""
    _require_ray()
    from .deployment import BlazeDeployment

    configure_logging(log_level)
    try:
        deployment = BlazeDeployment(
            app,
            _replicas(
                replicas, min_replicas, max_replicas, target_ongoing_requests, cpus_per_replica, max_ongoing_requests
            ),
            _config(grace_period, api_key, access_log),
            name=name,
            log_level=log_level,
        )
        cluster = _cluster(address, num_cpus, host, http_port, grpc_port if grpc else None)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    raise typer.Exit(_serve(deployment, cluster))


@ray_cli.command("llm")
def llm(
    model: Annotated[
        Path | None, typer.Option(help="A GGUF file or a Hugging Face directory (default: SmolLM2-135M-Instruct).")
    ] = None,
    replicas: Replicas = 1,
    min_replicas: MinReplicas = None,
    max_replicas: MaxReplicas = None,
    target_ongoing_requests: TargetOngoing = None,
    cpus_per_replica: CpusPerReplica = 1.0,
    max_ongoing_requests: MaxOngoing = None,
    threads: Annotated[
        int, typer.Option(min=0, help="Torch threads of each replica's engine (0: --cpus-per-replica, at least 1).")
    ] = 0,
    dtype: Annotated[str, typer.Option(help="auto, float32 or bfloat16 (see blaze llm --help).")] = "auto",
    weights: Annotated[str, typer.Option(help="auto, full, int8 or int4 (see blaze llm --help).")] = "auto",
    max_num_seqs: Annotated[int, typer.Option(min=1, help="Sequences each engine decodes together.")] = 32,
    max_waiting: Annotated[int, typer.Option(min=1, help="Requests queued in each engine before 429.")] = 256,
    max_model_len: Annotated[int, typer.Option(min=16, help="Context length (prompt + answer).")] = 2048,
    kv_cache_mb: Annotated[int, typer.Option(min=1, help="KV cache budget of each engine, in MiB.")] = 1024,
    startup_timeout: Annotated[
        float, typer.Option(min=0, help="Seconds a request that arrives while the model loads waits for it.")
    ] = 120.0,
    address: Address = None,
    num_cpus: NumCpus = None,
    host: Host = "0.0.0.0",
    http_port: HttpPort = 8000,
    grpc_port: GrpcPort = 50051,
    grpc: Grpc = True,
    name: Name = "blazerpc-llm",
    grace_period: GracePeriod = 10.0,
    api_key: ApiKey = None,
    access_log: AccessLog = True,
    log_level: LogLevel = "info",
) -> None:
    """Serve the built-in LLM from Ray Serve replicas, one engine process per replica."""
    _require_ray()
    from ..llm.config import EngineConfig
    from .deployment import BlazeDeployment
    from .llm import llm_factory

    configure_logging(log_level)
    try:
        engine = EngineConfig(
            max_num_seqs=max_num_seqs,
            max_waiting=max_waiting,
            max_model_len=max_model_len,
            kv_cache_mb=kv_cache_mb,
            dtype=dtype,
            weights=weights,
            threads=threads or max(1, round(cpus_per_replica)),
        )
        deployment = BlazeDeployment(
            llm_factory(model, engine, startup_timeout),
            # An engine takes max_num_seqs at once and queues the rest itself (429 past max_waiting).
            _replicas(
                replicas,
                min_replicas,
                max_replicas,
                target_ongoing_requests or max_num_seqs,
                cpus_per_replica,
                max_ongoing_requests or max_num_seqs + max_waiting,
            ),
            _config(grace_period, api_key, access_log),
            name=name,
            log_level=log_level,
        )
        cluster = _cluster(address, num_cpus, host, http_port, grpc_port if grpc else None)
    except (ValueError, FileNotFoundError) as exc:
        raise typer.BadParameter(str(exc)) from None
    raise typer.Exit(_serve(deployment, cluster))


def _replicas(
    count: int,
    min_count: int | None,
    max_count: int | None,
    target: float | None,
    num_cpus: float,
    max_ongoing: int | None,
) -> ReplicaConfig:
    from .deployment import MAX_ONGOING_REQUESTS, ReplicaConfig

    return ReplicaConfig(
        count=count,
        min_count=min_count,
        max_count=max_count,
        num_cpus=num_cpus,
        max_ongoing_requests=max_ongoing or MAX_ONGOING_REQUESTS,
        **({} if target is None else {"target_ongoing_requests": target}),
    )


def _config(grace_period: float, api_key: list[str] | None, access_log: bool) -> ServeConfig:
    keys = tuple(api_key) if api_key else api_keys_from_env()
    return ServeConfig(grace_period=grace_period, api_keys=keys, access_log=access_log)


def _cluster(address: str | None, num_cpus: int | None, host: str, http_port: int, grpc_port: int | None) -> RayCluster:
    from .runner import RayCluster

    return RayCluster(
        address=address,
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        num_cpus=num_cpus,
        working_dir=Path(os.getcwd()),
    )


def _serve(deployment: BlazeDeployment, cluster: RayCluster) -> int:
    from .runner import serve_on_ray

    return serve_on_ray(deployment, cluster)


def _require_ray() -> None:
    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("grpc_tools") is None:
        raise typer.BadParameter("Ray Serve is not installed: pip install 'blazerpc[ray]'")

"""``blaze ray ...``: connect to Ray (or start it), deploy, serve until a signal, remove the deployment."""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

from .deployment import BlazeDeployment

log = logging.getLogger("blazerpc")


@dataclass(frozen=True)
class RayCluster:
    """Where the replicas run and where Ray Serve's proxies listen.

    ``address`` ``None`` starts a local Ray instance (with ``num_cpus`` CPUs, all by default)
    that lives as long as the command; ``"auto"`` or ``"ray://host:10001"`` joins a running
    cluster, where Serve's proxies take the ports and gRPC services of whoever started Serve
    there first (see docs/scaling.md).
    """

    address: str | None = None
    host: str = "0.0.0.0"
    http_port: int = 8000
    grpc_port: int | None = 50051  # None: no gRPC proxy
    num_cpus: int | None = None
    working_dir: Path = Path(".")  # shipped to every worker: where the app's module is

    def __post_init__(self) -> None:
        for name in ("http_port", "grpc_port"):
            port = getattr(self, name)
            if port is not None and not 1 <= port <= 65535:
                raise ValueError(f"{name} must be between 1 and 65535, got {port}")
        if self.num_cpus is not None and self.address is not None:
            raise ValueError("--num-cpus sizes a local Ray instance; a cluster joined with --address has its own")
        if self.grpc_port == self.http_port:
            raise ValueError("the HTTP and gRPC ports must differ")


def serve_on_ray(deployment: BlazeDeployment, cluster: RayCluster) -> int:
    """Deploy, then serve until SIGINT or SIGTERM; remove the deployment, and stop a Ray instance
    started here. Returns the exit code."""
    import ray
    from ray import serve

    local = cluster.address is None
    runtime_env = deployment.runtime_env(working_dir=cluster.working_dir.resolve())
    if local:
        ray.init(num_cpus=cluster.num_cpus, include_dashboard=False, runtime_env=runtime_env)
    else:
        ray.init(address=cluster.address, runtime_env=runtime_env)
    stop = _stop_on_signal()
    deployed = False
    try:
        grpc = None if cluster.grpc_port is None else deployment.grpc_options(cluster.grpc_port)
        serve.start(http_options={"host": cluster.host, "port": cluster.http_port}, grpc_options=grpc)
        serve.run(deployment.application(), name=deployment.name, route_prefix="/")
        deployed = True
        where = f"HTTP on http://{cluster.host}:{cluster.http_port}"
        if cluster.grpc_port is not None:
            where += f", gRPC on {cluster.host}:{cluster.grpc_port}"
        log.info("serving %r on Ray Serve (%s); SIGINT or SIGTERM removes it", deployment.name, where)
        while not stop.wait(0.5):
            pass
    finally:
        if deployed:
            log.info("removing %r", deployment.name)
            serve.delete(deployment.name)
        if local:
            serve.shutdown()  # type: ignore[no-untyped-call]
            ray.shutdown()
    return 0


def _stop_on_signal() -> threading.Event:
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return stop

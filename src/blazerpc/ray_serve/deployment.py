"""``BlazeDeployment``: a ``BlazeApp`` as a Ray Serve application, for ``serve.run``.

>>> blaze = BlazeDeployment("app:app", ReplicaConfig(count=2))
>>> ray.init(runtime_env=blaze.runtime_env())
>>> serve.start(http_options={"port": 8000}, grpc_options=blaze.grpc_options(port=50051))
>>> serve.run(blaze.application(), name="blazerpc", route_prefix="/")

Replicas cannot be sent the app object (its middleware, metrics and hooks hold locks, threads
and open resources), so each one builds it: it imports the app's module (``"module:attr"``, or
the module a ``BlazeApp`` given here was found in), or calls a factory (``blaze ray llm``).
The driver builds it once too, to read its models and generate the gRPC stubs.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..app import BlazeApp
from ..serving import ServeConfig
from ..workers import import_app
from .replica import AppFactory, replica_class
from .stubs import HEALTH_SERVICER, STUBS_ROOT, generate_stubs

#: Ray's default ``max_ongoing_requests`` (5) would queue a batched model's requests in Ray's
#: router instead of our batcher; a replica takes this many at once unless told otherwise.
MAX_ONGOING_REQUESTS = 100


@dataclass(frozen=True)
class ReplicaConfig:
    """How many replicas and what each one reserves: a fixed ``count``, or autoscaling between
    ``min_count`` and ``max_count`` on the requests each replica has in flight."""

    count: int = 1
    min_count: int | None = None
    max_count: int | None = None
    target_ongoing_requests: float = 2.0  # autoscaling adds replicas above this many calls in flight each
    num_cpus: float = 1.0  # CPUs Ray reserves per replica (0: none; fractions allowed)
    max_ongoing_requests: int = MAX_ONGOING_REQUESTS
    health_check_period_s: float = 10.0

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"count must be >= 1 replica, got {self.count}")
        if (self.min_count is None) != (self.max_count is None):
            raise ValueError("autoscaling needs both min_count and max_count (--min-replicas and --max-replicas)")
        if self.min_count is not None and self.max_count is not None and not 0 <= self.min_count <= self.max_count:
            raise ValueError(f"need 0 <= min_count <= max_count, got {self.min_count} and {self.max_count}")
        if self.max_count is not None and self.max_count < 1:
            raise ValueError(f"max_count must be >= 1 replica, got {self.max_count}")
        if self.num_cpus < 0:
            raise ValueError(f"num_cpus must be >= 0, got {self.num_cpus}")
        if self.max_ongoing_requests < 1:
            raise ValueError(f"max_ongoing_requests must be >= 1, got {self.max_ongoing_requests}")
        if not self.target_ongoing_requests > 0 or not self.health_check_period_s > 0:
            raise ValueError("target_ongoing_requests and health_check_period_s must be > 0")

    @property
    def autoscaling(self) -> bool:
        return self.max_count is not None

    def deployment_options(self) -> dict[str, Any]:
        """The ``serve.deployment`` options these stand for."""
        options: dict[str, Any] = {
            "ray_actor_options": {"num_cpus": self.num_cpus},
            "max_ongoing_requests": self.max_ongoing_requests,
            "health_check_period_s": self.health_check_period_s,
        }
        if self.autoscaling:
            options["autoscaling_config"] = {
                "min_replicas": self.min_count,
                "max_replicas": self.max_count,
                "target_ongoing_requests": self.target_ongoing_requests,
            }
        else:
            options["num_replicas"] = self.count
        return options


class BlazeDeployment:
    """An app (a ``BlazeApp`` defined at module level, ``"module:attr"``, or a function that builds
    one) served by Ray Serve replicas, each with the options of ``config`` that apply in a replica
    (API keys, access log, body limits, grace period, SSE pings)."""

    def __init__(
        self,
        app: BlazeApp | str | AppFactory,
        replicas: ReplicaConfig | None = None,
        config: ServeConfig | None = None,
        *,
        name: str = "blazerpc",
        log_level: str = "info",
        stubs_root: Path = STUBS_ROOT,
    ) -> None:
        self.factory, self.app = _factory(app)
        self.replicas = replicas or ReplicaConfig()
        self.config = config or ServeConfig()
        if self.config.tls or self.config.metrics_port is not None:
            raise ValueError("TLS and a separate metrics port are the proxy's business under Ray Serve; leave them off")
        self.name = name
        self.log_level = log_level
        self.stubs = generate_stubs(self.app.registry, stubs_root)

    def runtime_env(self, working_dir: str | Path | None = None) -> dict[str, Any]:
        """What the Ray job needs: the gRPC stubs on every worker (proxies and replicas), and
        ``working_dir`` (where the app's module is) as every worker's current directory."""
        env: dict[str, Any] = {"py_modules": [str(self.stubs.path)]}
        if working_dir is not None:
            env["working_dir"] = str(working_dir)
        return env

    def grpc_options(self, port: int) -> Any:
        """``gRPCOptions`` for ``serve.start``: our service and ``grpc.health.v1.Health`` on ``port``."""
        from ray.serve.config import gRPCOptions

        return gRPCOptions(port=port, grpc_servicer_functions=[self.stubs.servicer_function, HEALTH_SERVICER])

    def application(self) -> Any:
        """The bound Ray Serve application, for ``serve.run``."""
        from ray import serve

        body = serve.ingress()(replica_class(self.app.registry))
        deployment = serve.deployment(
            name=self.name,
            # Ray waits this long for calls in flight before it stops a replica; ours decide within it.
            graceful_shutdown_timeout_s=self.config.grace_period + 5,
            **self.replicas.deployment_options(),
        )(body)
        return deployment.bind(self.factory, self.config, self.stubs.messages_module, self.log_level)


def _factory(app: BlazeApp | str | AppFactory) -> tuple[AppFactory, BlazeApp]:
    """How a replica builds the app, and the app built here."""
    if isinstance(app, str):
        return functools.partial(import_app, app), import_app(app)
    if isinstance(app, BlazeApp):
        ref = app_reference(app)
        return functools.partial(import_app, ref), app
    built = app()
    if not isinstance(built, BlazeApp):
        raise ValueError(f"the app factory returned a {type(built).__name__}, not a BlazeApp")
    return app, built


def app_reference(app: BlazeApp) -> str:
    """``"module:attr"`` of a module-level ``BlazeApp``, so replicas can import it."""
    for module_name, module in list(sys.modules.items()):
        if module is None or getattr(module, "__name__", "__main__") in ("__main__", "__mp_main__"):
            continue  # the script being run (also known as __mp_main__): no other process can import it
        for attr, value in list(vars(module).items()):
            if value is app:
                return f"{module_name}:{attr}"
    raise ValueError(
        "Ray's replicas import the app: define it at module level in a module they can import "
        "(not the script being run) and pass it, or pass 'module:attr'"
    )

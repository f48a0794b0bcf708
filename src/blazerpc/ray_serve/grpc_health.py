"""The standard ``grpc.health.v1.Health`` service on Ray Serve's gRPC proxy.

Ray's proxy routes every method of a registered service to a replica method of the same name,
so ``Check`` is answered by one replica from its readiness (``BlazeReplica.Check``), as
``blaze serve`` answers it. ``Watch`` is not served. The messages are grpclib's generated ones,
so nothing beyond blazerpc has to be importable in the proxy.
"""

from __future__ import annotations

from typing import Any

import grpc
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse

SERVICE_NAME = "grpc.health.v1.Health"


def add_health_servicer_to_server(servicer: Any, server: Any) -> None:
    """What protoc would generate for the one method: Ray's proxy replaces the behaviour, keeps the
    (de)serializers."""
    check = grpc.unary_unary_rpc_method_handler(
        servicer.Check,
        request_deserializer=HealthCheckRequest.FromString,
        response_serializer=HealthCheckResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, {"Check": check}),))


def health_reply(serving: bool) -> HealthCheckResponse:
    status = HealthCheckResponse.SERVING if serving else HealthCheckResponse.NOT_SERVING
    return HealthCheckResponse(status=status)

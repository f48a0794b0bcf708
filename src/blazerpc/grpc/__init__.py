"""gRPC transport on grpclib: the inference service, health, reflection, and the client."""

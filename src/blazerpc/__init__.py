"""blazerpc: serve Python functions and LLMs over gRPC and HTTP, with token streaming.

The names below load on first use, so that importing one part (the LLM engine in its own
process, say) does not load the transports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import BlazeApp
    from .context import Context, current_context
    from .errors import BlazeError, Status
    from .grpc.client import BlazeClient
    from .logs import RequestIdFilter
    from .middleware import Middleware
    from .serving import BlazeServer, ServeConfig
    from .tensor import TensorInput, TensorOutput

__version__ = "0.1.0"

_WHERE = {
    "BlazeApp": ".app",
    "BlazeClient": ".grpc.client",
    "BlazeError": ".errors",
    "BlazeServer": ".serving",
    "Context": ".context",
    "Middleware": ".middleware",
    "RequestIdFilter": ".logs",
    "ServeConfig": ".serving",
    "Status": ".errors",
    "TensorInput": ".tensor",
    "TensorOutput": ".tensor",
    "current_context": ".context",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'blazerpc' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "BlazeApp",
    "BlazeClient",
    "BlazeError",
    "BlazeServer",
    "Context",
    "Middleware",
    "RequestIdFilter",
    "ServeConfig",
    "Status",
    "TensorInput",
    "TensorOutput",
    "__version__",
    "current_context",
]

"""blazerpc: serve Python functions and LLMs over gRPC and HTTP, with token streaming.

The names below load on first use, so that importing one part (the LLM engine in its own
process, say) does not load the transports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import BlazeApp
    from .errors import BlazeError, Status
    from .grpc.client import BlazeClient
    from .serving import BlazeServer, ServeConfig
    from .tensor import TensorInput, TensorOutput

__version__ = "0.1.0"

_WHERE = {
    "BlazeApp": ".app",
    "BlazeClient": ".grpc.client",
    "BlazeError": ".errors",
    "BlazeServer": ".serving",
    "ServeConfig": ".serving",
    "Status": ".errors",
    "TensorInput": ".tensor",
    "TensorOutput": ".tensor",
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
    "ServeConfig",
    "Status",
    "TensorInput",
    "TensorOutput",
    "__version__",
]

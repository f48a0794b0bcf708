"""blazerpc: serve Python functions and LLMs over gRPC and HTTP, with token streaming."""

from .app import BlazeApp
from .errors import BlazeError, Status
from .grpc.client import BlazeClient
from .serving import BlazeServer, ServeConfig
from .tensor import TensorInput, TensorOutput

__version__ = "0.1.0"

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

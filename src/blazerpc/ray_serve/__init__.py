"""Scale-out on Ray Serve: an app's models served by replicas behind Ray's HTTP and gRPC proxies.

``blaze ray serve`` / ``blaze ray llm`` (``cli.py``) deploy and wait; ``BlazeDeployment`` builds
the Ray Serve application for your own ``serve.run``. The names below load on first use, and
Ray only where it is used, so ``blaze --help`` loads neither Ray nor grpcio. See docs/scaling.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .deployment import BlazeDeployment, ReplicaConfig
    from .llm import llm_factory

_WHERE = {"BlazeDeployment": ".deployment", "ReplicaConfig": ".deployment", "llm_factory": ".llm"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'blazerpc.ray_serve' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name], __name__), name)
    globals()[name] = value
    return value


__all__ = ["BlazeDeployment", "ReplicaConfig", "llm_factory"]

"""``blaze llm``'s app, built in each replica: every replica runs its own engine process."""

from __future__ import annotations

import functools
from pathlib import Path

from ..app import BlazeApp
from ..llm.config import EngineConfig
from .replica import AppFactory


def llm_app(model: Path | None, config: EngineConfig, startup_timeout_s: float) -> BlazeApp:
    """The app ``blaze llm`` serves (``generate`` and ``/v1/*``), its engine started by the server."""
    from ..llm_app.service import LLMService

    return LLMService(model, config, startup_timeout_s=startup_timeout_s).app


def llm_factory(model: Path | None, config: EngineConfig, startup_timeout_s: float = 120.0) -> AppFactory:
    """A picklable function that builds the LLM app, for ``BlazeDeployment``."""
    return functools.partial(llm_app, model, config, startup_timeout_s)

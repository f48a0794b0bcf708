"""``LLMService``: the built-in LLM as a ``BlazeApp``, whose readiness follows the engine's."""

from __future__ import annotations

import logging
from pathlib import Path

from ..app import BlazeApp
from ..llm.client import EngineState, RestartPolicy
from ..llm.config import EngineConfig
from .front_door import FrontDoor
from .generate import add_generate_model
from .metrics import LLMMetrics
from .openai_routes import openai_error_body, openai_router

log = logging.getLogger("blazerpc.llm")


class LLMService:
    """``app`` serves ``generate`` and ``/v1/*``; the engine process starts and stops with the server."""

    def __init__(
        self,
        model: str | Path | None = None,
        config: EngineConfig | None = None,
        restart: RestartPolicy | None = None,
        startup_timeout_s: float = 120.0,
    ) -> None:
        self.app = BlazeApp("blazerpc-llm")
        self.metrics = LLMMetrics(self.app.metrics.registry, lambda: self.door.model_name)
        self.door = FrontDoor(model, config, restart, self._on_engine_state, startup_timeout_s, self.metrics)
        self.app.metrics.on_scrape(self._read_engine_stats)
        self.app.on_startup(self.door.start)
        self.app.on_shutdown(self.door.stop)
        add_generate_model(self.app, self.door)
        self.app.include_router(openai_router(self.door), error_body=openai_error_body)

    async def _read_engine_stats(self) -> None:
        self.metrics.engine_says(await self.door.client.stats(), self.door.client.pid)

    def _on_engine_state(self, state: EngineState, why: str) -> None:
        if state is EngineState.READY:
            self.app.health.set_available(True)
            if self.door.client.info is not None:
                self.metrics.engine_ready(self.door.client.info.runtime)
        elif state is EngineState.FAILED and self.door.client.info is not None:
            self.app.health.fail(why)  # it ran once, then died more often than the restart policy allows
        elif state in (EngineState.RESTARTING, EngineState.FAILED):
            self.app.health.set_available(False, why)

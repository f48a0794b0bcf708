"""``EngineChannel``: one engine process and its message threads, started and stopped for real."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

from blazerpc.llm.config import EngineConfig
from blazerpc.llm.engine_channel import EngineChannel, describe_exit
from blazerpc.llm.protocol import EngineReady
from tests.conftest import until


def test_exits_are_described_by_code_or_signal() -> None:
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(1) == "exit code 1" and describe_exit(None) == "still running"


async def test_a_channel_reports_ready_then_the_end_of_its_process(tiny_dir: Path) -> None:
    messages: list[Any] = []
    arrived = asyncio.Event()

    def on_message(_: EngineChannel, message: Any) -> None:  # on the loop, from the reader thread
        messages.append(message)
        arrived.set()

    channel = EngineChannel(str(tiny_dir), EngineConfig(kv_cache_mb=16, max_model_len=64), on_message)
    await asyncio.wait_for(arrived.wait(), 60)
    assert isinstance(messages[0], EngineReady) and messages[0].max_len == 64
    await asyncio.get_running_loop().run_in_executor(None, channel.close, 10.0)
    assert channel.process.exitcode == 0
    await until(lambda: messages[-1] is None)  # the reader saw the pipe close
    assert channel.exit_description == "exit code 0"

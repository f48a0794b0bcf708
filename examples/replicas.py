"""Which replica answered: an app to watch Ray Serve spread calls and cancel streams (docs/scaling.md).

blaze ray serve examples.replicas:app --replicas 2
"""

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import Field

from blazerpc import BlazeApp

app = BlazeApp("replicas")


@dataclass
class Replica:
    pid: int
    host: str


@app.model("whoami")
def whoami(sleep_s: Annotated[float, Field(ge=0, le=10)] = 0) -> Replica:
    """The process and host of the replica that ran this call, after sleeping ``sleep_s`` seconds."""
    time.sleep(sleep_s)
    return Replica(pid=os.getpid(), host=socket.gethostname())


@app.model("count", streaming=True)
async def count(
    to: Annotated[int, Field(ge=0, le=100_000)], every_ms: float = 100, report: str = ""
) -> AsyncIterator[int]:
    """Count from 1 to ``to``, a number every ``every_ms``. With ``report`` (a file path), write there
    how the stream ended: ``finished``, or ``closed after N`` when the client left early."""
    sent = 0
    try:
        for n in range(1, to + 1):
            await asyncio.sleep(every_ms / 1000)
            yield n
            sent = n
    finally:
        if report:
            Path(report).write_text("finished" if sent == to else f"closed after {sent}")

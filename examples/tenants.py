"""Context and middleware: a per-tenant quota around every call, and models that read their Context.

blaze serve examples.tenants:app --api-key demo-key
"""

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

from blazerpc import BlazeApp, BlazeError, Context, Middleware, Status

app = BlazeApp("tenants")


class TenantQuota(Middleware):
    """At most ``per_minute`` calls a minute per tenant (the ``x-tenant`` header or metadata);
    the rest get RESOURCE_EXHAUSTED (HTTP 429) with Retry-After. Counts what each tenant streamed."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.minute = 0
        self.calls: Counter[str] = Counter()  # tenant -> calls this minute
        self.streamed: Counter[str] = Counter()  # tenant -> messages streamed to it

    def before(self, ctx: Context) -> None:
        if ctx.method.startswith("GET "):
            return  # docs and listings are free
        tenant = ctx.state["tenant"] = ctx.metadata.get("x-tenant", "anonymous")
        if self.left(tenant) <= 0:
            message = f"tenant {tenant!r} used its {self.per_minute} calls this minute"
            raise BlazeError(Status.RESOURCE_EXHAUSTED, message, retry_after=60 - time.time() % 60)
        self.calls[tenant] += 1

    def after(self, ctx: Context) -> None:
        if "tenant" in ctx.state:
            self.streamed[ctx.state["tenant"]] += ctx.messages

    def left(self, tenant: str) -> int:
        minute = int(time.time() // 60)
        if minute != self.minute:  # a new minute: every tenant starts again
            self.minute, self.calls = minute, Counter()
        return self.per_minute - self.calls[tenant]


quota = app.add_middleware(TenantQuota(per_minute=100))


@dataclass
class Reply:
    text: str
    tenant: str
    request_id: str


@app.model("echo")
def echo(text: str, ctx: Context) -> Reply:
    """The text back, with who asked and the call's request id."""
    ctx.set_header("x-calls-left", str(quota.left(ctx.state["tenant"])))
    return Reply(text=text, tenant=ctx.state["tenant"], request_id=ctx.request_id)


@app.model("words", streaming=True)
async def words(text: str, ctx: Context) -> AsyncIterator[str]:
    """The words of ``text`` one by one; near its deadline (gRPC) the stream ends early and says why."""
    for word in text.split():
        remaining = ctx.time_remaining()
        if remaining is not None and remaining < 0.05:
            ctx.set_header("x-truncated", "deadline")
            return
        await asyncio.sleep(0.01)
        yield word

"""The replica's HTTP app as Ray's proxy should see it: one ``x-request-id`` per answer.

Ray's proxy gives every request an ``x-request-id`` (the client's, or a new UUID) before the
replica sees it, and adds the header to every answer; our gate adds it too. Where the two are
the same id, the replica drops its own, so a client reads one value, not ``"id, id"``.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..context import REQUEST_ID

_NAME = REQUEST_ID.encode()


class OneRequestId:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((value for name, value in scope["headers"] if name == _NAME), None)
        if given is None:
            await self.app(scope, receive, send)
            return

        async def send_one(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(n, v) for n, v in message.get("headers", ()) if not (n == _NAME and v == given)]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_one)

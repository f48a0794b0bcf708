"""API keys: ``Authorization: Bearer KEY`` on every call, on both transports.

HTTP sends it as a header (the ``openai`` client's ``api_key`` does), gRPC as ``authorization``
metadata. A call without it, or with a key that is not one of the server's, is refused with
UNAUTHENTICATED: HTTP 401 with ``WWW-Authenticate: Bearer`` (OpenAI's error object under
``/v1``), gRPC UNAUTHENTICATED. ``/health``, ``/ready``, gRPC health and reflection never reach
middleware, so they are always open; the docs and metrics are open unless ``protect_docs``.
"""

from __future__ import annotations

import hmac
import os
import re
from collections.abc import Sequence

from .context import Context
from .errors import BlazeError, Status
from .middleware import Middleware

ENV = "BLAZE_API_KEYS"
#: Open without a key unless ``protect_docs``: what a browser or a scraper fetches.
DOC_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/metrics"})
_KEY = re.compile(r"[!-+\--~]+")  # visible ASCII but the comma, which separates keys in BLAZE_API_KEYS


def check_api_keys(keys: Sequence[str]) -> None:
    """Raise ``ValueError`` unless every key is usable in a header and in ``BLAZE_API_KEYS``."""
    for key in keys:
        if not _KEY.fullmatch(key):
            raise ValueError(
                "an API key must be visible ASCII with no spaces or commas, e.g. one made with "
                f"`openssl rand -hex 32`; got one of {len(key)} characters that is not"
            )


def api_keys_from_env() -> tuple[str, ...]:
    """The keys of ``BLAZE_API_KEYS`` (comma-separated; spaces around them are ignored)."""
    keys = tuple(k.strip() for k in os.environ.get(ENV, "").split(",") if k.strip())
    check_api_keys(keys)
    return keys


class ApiKeyAuth(Middleware):
    """Refuse calls without one of ``keys`` as a bearer token (compared in constant time)."""

    def __init__(self, keys: Sequence[str], *, protect_docs: bool = False) -> None:
        if not keys:
            raise ValueError("ApiKeyAuth needs at least one key")
        check_api_keys(keys)
        self.keys = tuple(k.encode() for k in keys)
        self.open_paths = frozenset() if protect_docs else DOC_PATHS

    def before(self, ctx: Context) -> None:
        if ctx.transport == "http" and ctx.path in self.open_paths:
            return
        header = ctx.metadata.get("authorization")
        if header is None:
            raise BlazeError(Status.UNAUTHENTICATED, "missing API key: send the header 'Authorization: Bearer <key>'")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not self.valid(token.strip()):
            raise BlazeError(Status.UNAUTHENTICATED, "invalid API key")

    def valid(self, token: str) -> bool:
        given = token.encode("utf-8", "surrogateescape")
        matched = False
        for key in self.keys:  # every key compared, so the time says nothing of which one matched
            matched |= hmac.compare_digest(given, key)
        return matched

"""API-key check for ``/v1/sandbox/*``: the ``X-Api-Key`` header must equal the configured key."""

from __future__ import annotations

import hmac

from fastapi import Request

__all__ = ["UnauthorizedError", "require_api_key"]


class UnauthorizedError(Exception):
    """Missing or wrong key; answered with HTTP 401 and an empty body, as the official service does."""


async def require_api_key(request: Request) -> None:
    """FastAPI dependency. An empty configured key matches a missing header (official behaviour)."""
    expected: bytes = request.app.state.service.api_key
    given = request.headers.get("x-api-key", "").encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(given, expected):
        raise UnauthorizedError

"""API-key check for ``/v1/sandbox/*``: the ``X-Api-Key`` header must equal the configured key."""

from __future__ import annotations

from fastapi import Request

__all__ = ["UnauthorizedError", "require_api_key"]


class UnauthorizedError(Exception):
    """Missing or wrong key; answered with HTTP 401 and an empty body, as the official service does."""


async def require_api_key(request: Request) -> None:
    """FastAPI dependency. An empty configured key matches a missing header (official behaviour)."""
    given = request.headers.get("x-api-key", "").encode("latin-1")  # the bytes as sent
    if not request.app.state.service.key_matches(given):
        raise UnauthorizedError

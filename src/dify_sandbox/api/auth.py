"""API-key check for ``/v1/sandbox/*``: the ``X-Api-Key`` header must equal the configured key; refusals are logged."""

from __future__ import annotations

from fastapi import Request

__all__ = ["UnauthorizedError", "require_api_key"]


class UnauthorizedError(Exception):
    """Missing or wrong key; answered with HTTP 401 and an empty body, as the official service does."""


async def require_api_key(request: Request) -> None:
    """FastAPI dependency. An empty configured key matches a missing header (official behaviour)."""
    header = request.headers.get("x-api-key")
    given = (header or "").encode("latin-1")  # the bytes as sent
    service = request.app.state.service
    if not service.key_matches(given):
        client = request.client.host if request.client else "unknown"
        service.refused_keys.refused(client, "missing" if header is None else "wrong")
        raise UnauthorizedError

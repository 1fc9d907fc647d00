"""The one place where exceptions become HTTP responses in the API's error envelope."""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import PlainTextResponse, Response

from dify_sandbox.api.auth import UnauthorizedError
from dify_sandbox.api.schemas import error_envelope
from dify_sandbox.errors import ExecutorError, RequestError, SandboxError

__all__ = ["error_response", "install_handlers"]

logger = structlog.get_logger("dify_sandbox.api")

CLIENT_CLOSED_REQUEST = 499


async def _enveloped(_: Request, exc: Exception) -> Response:
    return error_response(exc)


async def _unauthorized(_: Request, __: Exception) -> Response:
    return Response(status_code=401)


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in (404, 405):
        # gin's answer for an unknown route or method, byte for byte.
        return PlainTextResponse("404 page not found", status_code=404)
    return error_envelope(exc.status_code, -exc.status_code, str(exc.detail))


async def _client_disconnect(_: Request, __: Exception) -> Response:
    # The client closed the connection before sending its whole body: nobody reads this answer,
    # and it is not a server error. 499 is nginx's "client closed request", for the metrics.
    return Response(status_code=CLIENT_CLOSED_REQUEST)


def error_response(exc: Exception) -> Response:
    """The answer for an exception raised while serving a run outside the app (``fast_run.py``)."""
    if isinstance(exc, RequestError):
        return error_envelope(exc.http_status, exc.code, str(exc))
    if isinstance(exc, ExecutorError):
        logger.error("Run failed in the executor", error=str(exc), error_type=type(exc).__name__)
        return error_envelope(200, -500, str(exc))
    if isinstance(exc, SandboxError):
        logger.error("Request failed", error=str(exc), exc_info=exc)
        return error_envelope(200, -500, str(exc))
    logger.error("Unexpected error", exc_info=exc)
    return error_envelope(500, -500, "internal error")


def install_handlers(app: FastAPI) -> None:
    """Registers every exception handler on ``app``."""
    app.add_exception_handler(SandboxError, _enveloped)
    app.add_exception_handler(UnauthorizedError, _unauthorized)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_disconnect)
    app.add_exception_handler(Exception, _enveloped)

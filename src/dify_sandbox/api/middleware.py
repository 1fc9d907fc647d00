"""Per-request context as a pure ASGI middleware: a request id on every log line, HTTP metrics, access log.

An incoming ``X-Request-Id`` is kept (if it is short and printable), otherwise one is generated;
either way it is echoed in the response and bound with ``structlog.contextvars`` for the request.
"""

from __future__ import annotations

import random
import time

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dify_sandbox.metrics import SandboxMetrics

__all__ = ["RequestContextMiddleware"]

logger = structlog.get_logger("dify_sandbox.access")

MAX_REQUEST_ID_LENGTH = 128
_HEADER = b"x-request-id"
# Our own generator: a snippet that seeds the shared ``random`` (thread executor) cannot repeat our ids.
_ids = random.Random()  # noqa: S311 - ids name requests in logs; they guard nothing


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == _HEADER:
            text: str = value.decode("latin-1")
            if 0 < len(text) <= MAX_REQUEST_ID_LENGTH and text.isprintable():
                return text
            break
    # 128 random bits, like a uuid4's hex: unique enough to find a request in the logs. Not
    # os.urandom: its syscall lets a snippet thread take the GIL from the event loop mid-request.
    return f"{_ids.getrandbits(128):032x}"


class RequestContextMiddleware:
    """Binds ``request_id``, echoes it, counts the request by route template and status."""

    def __init__(self, app: ASGIApp, metrics: SandboxMetrics, access_log: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (_HEADER, request_id.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.count_request(template, status)
            if self.access_log:
                logger.info(
                    "Request handled",
                    method=scope.get("method"),
                    route=template,
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )
            structlog.contextvars.reset_contextvars(**tokens)

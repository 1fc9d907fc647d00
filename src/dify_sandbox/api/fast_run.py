"""``POST /v1/sandbox/run`` answered without the framework's routing and request objects, when it can be.

The run endpoint is the service's hot path. With the thread executor a small snippet costs less CPU
than FastAPI's routing, middleware and request machinery around it, so this ASGI layer answers a
well-formed JSON run request itself. Every other request, and every run request it does not take
as is (another content type, a wrong key, a body that does not validate, an unknown language), goes
to the FastAPI app with the body it already read replayed, so errors keep one implementation.
"""

from __future__ import annotations

from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dify_sandbox.api.handlers import error_response
from dify_sandbox.api.routes import LANGUAGES, RUN_PATH, execute_run
from dify_sandbox.api.schemas import RunBody
from dify_sandbox.service import Service

__all__ = ["RunFastPath"]

_JSON = b"application/json"


class RunFastPath:
    """Serves the common run request directly; hands everything else to ``app``."""

    def __init__(self, app: ASGIApp, service: Service, run_route: object) -> None:
        self.app = app
        self.service = service
        # Set on the scope as the router would, so the request metrics name the route.
        self.run_route = run_route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != RUN_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        if not self._takes(scope):
            await self.app(scope, receive, send)
            return
        body, complete = await self._read_body(receive)
        request = self._parse(body) if complete and body else None
        if request is None:
            await self.app(scope, _replay(body, complete, receive), send)
            return
        scope["route"] = self.run_route
        try:
            response = await execute_run(self.service, request)
        except Exception as exc:  # every failure becomes an enveloped answer, as in the app
            response = error_response(exc)
        await response(scope, receive, send)

    def _takes(self, scope: Scope) -> bool:
        """A JSON body within the size limit, and the right key (the app answers every other case)."""
        key: bytes | None = None
        json_body = False
        limit = self.service.settings.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                if key is not None:  # sent twice: the app decides which one counts
                    return False
                key = value
            elif name == b"content-type":
                json_body = value.split(b";", 1)[0].strip().lower() == _JSON
            elif name == b"content-length" and (not value.isdigit() or int(value) > limit):
                return False
        return json_body and self.service.key_matches(key or b"")

    async def _read_body(self, receive: Receive) -> tuple[bytes, bool]:
        """The body and True, or the part read before it went past the size limit or the client left, and False."""
        limit = self.service.settings.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks), False
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), True
            if size > limit:
                return b"".join(chunks), False

    def _parse(self, body: bytes) -> RunBody | None:
        try:
            request = RunBody.model_validate_json(body)
        except ValidationError:
            return None
        if request.language not in LANGUAGES or (request.enable_network and not self.service.settings.enable_network):
            return None
        return request


def _replay(body: bytes, complete: bool, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` first, then whatever the client still sends."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": not complete}

    return replay

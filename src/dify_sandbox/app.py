"""``create_app``: the FastAPI application of one server worker; its lifespan owns the executors."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.types import ASGIApp

from dify_sandbox import __version__
from dify_sandbox.api.fast_run import RunFastPath
from dify_sandbox.api.handlers import install_handlers
from dify_sandbox.api.middleware import RequestContextMiddleware
from dify_sandbox.api.routes import install_routes, run_route
from dify_sandbox.config import Settings
from dify_sandbox.service import Service

__all__ = ["create_app"]


def create_app(settings: Settings, service: Service) -> ASGIApp:
    """Builds the app; ``service`` is shared with the server so shutdown can see in-flight runs.

    Outermost first: request context (id, metrics, access log), the run fast path, FastAPI.
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        # What exists now (FastAPI, pydantic, the preloaded modules) lives as long as the worker:
        # frozen, it is no longer traversed by every collection the requests' garbage triggers.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await service.close()

    app = FastAPI(
        title="dify-sandbox-py",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs" if settings.debug else None,
        redoc_url=None,
    )
    app.state.service = service
    install_handlers(app)
    install_routes(app)
    service.metrics.start_route_series(route.path for route in app.routes if isinstance(route, APIRoute))
    fast_path = RunFastPath(app, service, run_route(app))
    # DEBUG gives the access log as the official service's gin debug mode does.
    access_log = settings.access_log or settings.debug
    return RequestContextMiddleware(fast_path, metrics=service.metrics, access_log=access_log)

"""The routes of the official API (and ``/health``), thin: bind, admit, run, answer."""

from __future__ import annotations

import dataclasses

import structlog
from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.responses import JSONResponse, Response

from dify_sandbox.api.auth import require_api_key
from dify_sandbox.api.binding import bind
from dify_sandbox.api.schemas import DependenciesBody, RunBody, envelope, run_data
from dify_sandbox.dependencies import read_requirements
from dify_sandbox.errors import (
    DependencySyncError,
    ExecutorError,
    ForcedStopError,
    NetworkDisabledError,
    RequestError,
    UnsupportedLanguageError,
)
from dify_sandbox.executors.base import Language, RunRequest
from dify_sandbox.metrics import CONTENT_TYPE, render
from dify_sandbox.service import Service

__all__ = ["LANGUAGES", "RUN_PATH", "execute_run", "install_routes", "run_route"]

logger = structlog.get_logger("dify_sandbox.api")

LANGUAGES: frozenset[str] = frozenset({"python3", "nodejs"})
RUN_PATH = "/v1/sandbox/run"

_RUN_SCHEMA = {
    "required": True,
    "content": {"application/json": {"schema": RunBody.model_json_schema()}},
}
_UPDATE_SCHEMA = {
    "required": True,
    "content": {"application/json": {"schema": DependenciesBody.model_json_schema()}},
}


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


async def health(request: Request) -> Response:
    if _service(request).admission.draining:
        return JSONResponse("shutting down", status_code=503)
    return JSONResponse("ok")


async def metrics(request: Request) -> Response:
    service = _service(request)
    if service.settings.metrics_require_key:
        await require_api_key(request)
    return Response(render(service.registry, service.dependency_metrics), media_type=CONTENT_TYPE)


async def run(request: Request) -> Response:
    await require_api_key(request)
    service = _service(request)
    body = await bind(request, RunBody, service.settings.max_body_bytes)
    return await execute_run(service, body)


async def execute_run(service: Service, body: RunBody) -> Response:
    """Checks, admits and runs one bound run request, records it, and builds the answer.

    Shared by the route and by ``fast_run.py``, which calls it for the requests it takes itself.
    """
    if body.language not in LANGUAGES:
        raise UnsupportedLanguageError()
    if body.enable_network and not service.settings.enable_network:
        raise NetworkDisabledError()
    language: Language = "nodejs" if body.language == "nodejs" else "python3"
    run_request = RunRequest(
        language=language,
        code=body.code,
        preload=body.preload,
        enable_network=body.enable_network,
        timeout=service.settings.worker_timeout,
    )
    metrics = service.metrics
    try:
        async with service.admission.admit() as queued:
            result = await service.executor(language).run(run_request)
        if service.admission.forced:
            raise ForcedStopError()
    except RequestError:
        metrics.record_run(language, "rejected", None, None)
        raise
    except ExecutorError:
        metrics.record_run(language, "internal_error", None, None)
        raise
    if result.exit_code and "ModuleNotFoundError" in result.stderr:
        hint = service.packages.import_hint(result.stderr)
        if hint:  # after the traceback: the package is on its way, or why it never came
            result = dataclasses.replace(result, stderr=result.stderr + hint)
    metrics.record_run(language, result.outcome.label, result.duration, queued)
    logger.info(
        "Run finished",
        language=language,
        executor=service.executor_name(language),
        outcome=result.outcome.label,
        exit_code=result.exit_code,
        exit_reason=result.outcome.reason,
        duration_ms=round(result.duration * 1000, 2),
        queued_ms=round(queued * 1000, 2),
        stdout_bytes=len(result.stdout),
        stderr_bytes=len(result.stderr),
        child_pid=result.pid,
    )
    if service.settings.debug:
        logger.debug("Run detail", code=body.code, stdout=result.stdout, stderr=result.stderr)
    return envelope(run_data(result))


def _python_only(language: str | None) -> None:
    if language != "python3":
        raise UnsupportedLanguageError()


def _dependency_list(service: Service) -> dict[str, object]:
    deps = read_requirements(service.settings.requirements_files)
    return {"dependencies": [{"name": dep.name, "version": dep.version} for dep in deps]}


async def dependencies(request: Request, language: str | None = None) -> Response:
    await require_api_key(request)
    _python_only(language)
    return envelope(_dependency_list(_service(request)))


async def update_dependencies(request: Request) -> Response:
    await require_api_key(request)
    service = _service(request)
    body = await bind(request, DependenciesBody, service.settings.max_body_bytes)
    _python_only(body.language)
    not_installed = await service.update_dependencies()
    if not_installed:
        raise DependencySyncError(f"some requirements are not installed: {not_installed}")
    return envelope({})


async def refresh_dependencies(request: Request, language: str | None = None) -> Response:
    """Syncs the requirement files as ``update`` does, then lists; after a failed sync the list is null."""
    await require_api_key(request)
    _python_only(language)
    service = _service(request)
    if await service.update_dependencies():
        return envelope({"dependencies": None})
    return envelope(_dependency_list(service))


def install_routes(app: FastAPI) -> None:
    """Adds every route to ``app`` directly: nested routers would cost a matching layer per request.

    The key check is a call at the top of each ``/v1/sandbox`` endpoint rather than a dependency,
    for the same reason.
    """
    app.add_api_route("/health", health, methods=["GET"], summary="Liveness and readiness; 503 once draining.")
    app.add_api_route("/metrics", metrics, methods=["GET"], summary="Prometheus metrics.", include_in_schema=False)
    app.add_api_route(
        RUN_PATH, run, methods=["POST"], summary="Run a snippet.", openapi_extra={"requestBody": _RUN_SCHEMA}
    )
    app.add_api_route(
        "/v1/sandbox/dependencies",
        dependencies,
        methods=["GET"],
        summary="Packages snippets may import, with installed versions.",
    )
    app.add_api_route(
        "/v1/sandbox/dependencies/update",
        update_dependencies,
        methods=["POST"],
        summary="Install what the requirement files add, then re-warm every worker.",
        openapi_extra={"requestBody": _UPDATE_SCHEMA},
    )
    app.add_api_route(
        "/v1/sandbox/dependencies/refresh",
        refresh_dependencies,
        methods=["GET"],
        summary="List the packages again (nothing is installed at run time).",
    )


def run_route(app: FastAPI) -> APIRoute:
    """The route object of ``POST /v1/sandbox/run`` (for the fast path to name it in metrics)."""
    for route in app.router.routes:
        if isinstance(route, APIRoute) and route.path == RUN_PATH:
            return route
    raise LookupError(RUN_PATH)

"""The routes of the official API (and ``/health``), thin: bind, admit, run, answer."""

from __future__ import annotations

import structlog
from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse, Response

from dify_sandbox.api.auth import require_api_key
from dify_sandbox.api.binding import bind
from dify_sandbox.api.schemas import DependenciesBody, RunBody, envelope, run_data
from dify_sandbox.dependencies import read_requirements
from dify_sandbox.errors import NetworkDisabledError, UnsupportedLanguageError
from dify_sandbox.executors.base import Language, RunRequest
from dify_sandbox.service import Service

__all__ = ["router"]

logger = structlog.get_logger("dify_sandbox.api")

LANGUAGES: frozenset[str] = frozenset({"python3", "nodejs"})

_RUN_SCHEMA = {
    "required": True,
    "content": {"application/json": {"schema": RunBody.model_json_schema()}},
}
_UPDATE_SCHEMA = {
    "required": True,
    "content": {"application/json": {"schema": DependenciesBody.model_json_schema()}},
}

router = APIRouter()
sandbox = APIRouter(prefix="/v1/sandbox", dependencies=[Depends(require_api_key)])


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


@router.get("/health", summary="Liveness and readiness; 503 once shutdown has begun.")
async def health(request: Request) -> Response:
    if _service(request).admission.draining:
        return JSONResponse("shutting down", status_code=503)
    return JSONResponse("ok")


@sandbox.post("/run", summary="Run a snippet.", openapi_extra={"requestBody": _RUN_SCHEMA})
async def run(request: Request) -> Response:
    service = _service(request)
    body = await bind(request, RunBody, service.settings.max_body_bytes)
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
    async with service.admission.admit() as queued:
        result = await service.executor(language).run(run_request)
    logger.info(
        "Run finished",
        language=language,
        exit_code=result.exit_code,
        timed_out=result.timed_out,
        output_limited=result.output_limited,
        signal=result.signal,
        duration_ms=round(result.duration * 1000, 2),
        queued_ms=round(queued * 1000, 2),
        stdout_bytes=len(result.stdout),
        stderr_bytes=len(result.stderr),
        child_pid=result.pid,
    )
    return envelope(run_data(result))


def _python_only(language: str | None) -> None:
    if language != "python3":
        raise UnsupportedLanguageError()


def _dependency_list(service: Service) -> dict[str, object]:
    deps = read_requirements(service.settings.requirements_files)
    return {"dependencies": [{"name": dep.name, "version": dep.version} for dep in deps]}


@sandbox.get("/dependencies", summary="Packages snippets may import, with installed versions.")
async def dependencies(request: Request, language: str | None = None) -> Response:
    _python_only(language)
    return envelope(_dependency_list(_service(request)))


@sandbox.post(
    "/dependencies/update",
    summary="Re-read the requirements and re-warm the executors.",
    openapi_extra={"requestBody": _UPDATE_SCHEMA},
)
async def update_dependencies(request: Request) -> Response:
    service = _service(request)
    body = await bind(request, DependenciesBody, service.settings.max_body_bytes)
    _python_only(body.language)
    await service.rewarm()
    return envelope({})


@sandbox.get("/dependencies/refresh", summary="List the packages again (nothing is installed at run time).")
async def refresh_dependencies(request: Request, language: str | None = None) -> Response:
    _python_only(language)
    return envelope(_dependency_list(_service(request)))


router.include_router(sandbox)

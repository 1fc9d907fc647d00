"""The API's shapes: request bodies, the run result, and the ``{code, message, data}`` envelope."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr
from starlette.responses import Response

from dify_sandbox.executors.base import RunResult

__all__ = ["DependenciesBody", "RunBody", "envelope", "error_envelope", "run_data"]


class RunBody(BaseModel):
    """``POST /v1/sandbox/run``. Unknown fields (old Dify sent ``dependencies``) are ignored."""

    model_config = ConfigDict(extra="ignore")

    language: StrictStr = Field(description="`python3` or `nodejs`.")
    code: StrictStr = Field(min_length=1, description="The snippet; never empty.")
    preload: StrictStr = Field("", description="Run before `code` only when the server enables preload.")
    enable_network: StrictBool = Field(False, description="Ask for network access (Dify always sends true).")


class DependenciesBody(BaseModel):
    """``POST /v1/sandbox/dependencies/update``."""

    model_config = ConfigDict(extra="ignore")

    language: StrictStr = Field(description="Only `python3` has dependencies.")


def run_data(result: RunResult) -> dict[str, Any]:
    """The ``data`` object for a run result (official main after #262)."""
    return {"stdout": result.stdout, "stderr": result.stderr, "error": result.error, "exit_code": result.exit_code}


def _json(status: int, body: dict[str, Any]) -> Response:
    # A lone surrogate (only possible in a message echoing input) becomes a valid JSON \u escape.
    content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "backslashreplace")
    return Response(content, status_code=status, media_type="application/json")


def envelope(data: Any) -> Response:
    """A success response: HTTP 200, code 0."""
    return _json(200, {"code": 0, "message": "success", "data": data})


def error_envelope(status: int, code: int, message: str) -> Response:
    """An error response; like the official service, a non-negative code is forced to -1."""
    return _json(status, {"code": code if code < 0 else -1, "message": message, "data": None})

"""Reads a request body into a schema, as gin's ``ShouldBind`` does: JSON, or form fields.

Every failure is a :class:`RequestError` (HTTP 400, code -400) with a message naming the field,
never FastAPI's 422, or saying to send JSON as JSON when a form body is a JSON document; a body
above the configured limit is a 413.
"""

from __future__ import annotations

from typing import Any, TypeVar
from urllib.parse import parse_qs

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from dify_sandbox.errors import PayloadTooLargeError, RequestError

__all__ = ["bind"]

ModelT = TypeVar("ModelT", bound=BaseModel)

JSON_SENT_AS_FORM = (
    "the body is JSON sent as a form (Content-Type: application/x-www-form-urlencoded); "
    "send it with Content-Type: application/json"
)
_FORM_BOOLEANS = {"true": True, "1": True, "false": False, "0": False, "": False}


async def bind(request: Request, model: type[ModelT], max_bytes: int) -> ModelT:
    """Parses and validates the body of ``request`` as ``model``."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type == "multipart/form-data":
        fields = await _multipart_fields(request, max_bytes)
        return _validate_form(model, fields)
    body = await _read_body(request, max_bytes)
    if content_type == "application/x-www-form-urlencoded":
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError("form body is not valid UTF-8") from None
        form = {key: values[-1] for key, values in parse_qs(text, keep_blank_values=True).items()}
        try:
            return _validate_form(model, form)
        except RequestError:
            # `curl -d '{...}'` sends JSON as a form: the whole document becomes one key.
            if next(iter(form), "").lstrip().startswith("{"):
                raise RequestError(JSON_SENT_AS_FORM) from None
            raise
    if not body.strip():
        raise RequestError("request body is empty")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise RequestError(_describe(exc)) from None


async def _read_body(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLargeError(f"request body larger than {max_bytes} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLargeError(f"request body larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _multipart_fields(request: Request, max_bytes: int) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLargeError(f"request body larger than {max_bytes} bytes")
    try:
        form = await request.form(max_part_size=max_bytes)
    except Exception as exc:
        raise RequestError(f"invalid multipart body: {exc}") from None
    return {key: value for key, value in form.items() if isinstance(value, str)}


def _validate_form(model: type[ModelT], form: dict[str, Any]) -> ModelT:
    # Form values are strings; the booleans gin accepts are converted before strict validation.
    fields: dict[str, Any] = dict(form)
    for name, field in model.model_fields.items():
        if field.annotation is bool and isinstance(fields.get(name), str):
            value = fields[name].strip().lower()
            if value not in _FORM_BOOLEANS:
                raise RequestError(f"{name}: not a boolean")
            fields[name] = _FORM_BOOLEANS[value]
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise RequestError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    if first["type"] == "json_invalid":
        return f"invalid JSON: {first['msg']}"
    return f"{location}: {first['msg']}" if location else first["msg"]

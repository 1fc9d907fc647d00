"""How a run request's body is read: validation errors, unknown languages, form bodies, content types, size limits."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from .conftest import Api, MakeApi

pytestmark = [pytest.mark.api, pytest.mark.anyio]

UNSUPPORTED_LANGUAGE = b'{"code":-400,"message":"unsupported language","data":null}'
NETWORK_DISABLED = b'{"code":-400,"message":"network is disabled, please enable it in the configuration","data":null}'
LIMIT = 1024  # the smallest SANDBOX_MAX_BODY_BYTES allowed
TOO_LARGE = b'{"code":-413,"message":"request body larger than 1024 bytes","data":null}'

MALFORMED_BODIES = [
    pytest.param(b'{"language": "python3", "code": ', "invalid JSON", id="invalid-json"),
    pytest.param(b"", "request body is empty", id="empty-body"),
    pytest.param(b"   \n", "request body is empty", id="blank-body"),
    pytest.param(b"[]", "", id="json-array"),
    pytest.param(b'"print(1)"', "", id="json-string"),
    pytest.param(b'{"language": "python3", "enable_network": true}', "code: Field required", id="missing-code"),
    pytest.param(b'{"language": "python3", "code": ""}', "code: String should have at least 1", id="empty-code"),
    pytest.param(b'{"language": "python3", "code": 123}', "code: Input should be a valid string", id="code-int"),
    pytest.param(b'{"language": "python3", "code": null}', "code: Input should be a valid string", id="code-null"),
    pytest.param(b'{"code": "print(1)"}', "language: Field required", id="missing-language"),
    pytest.param(b'{"language": 3, "code": "1"}', "language: Input should be a valid string", id="language-int"),
    pytest.param(
        b'{"language": "python3", "code": "1", "enable_network": "yes"}',
        "enable_network: Input should be a valid boolean",
        id="network-string",
    ),
    pytest.param(
        b'{"language": "python3", "code": "1", "preload": ["x"]}',
        "preload: Input should be a valid string",
        id="preload-list",
    ),
]


@pytest.mark.parametrize(("body", "message"), MALFORMED_BODIES)
async def test_malformed_body_is_http_400_naming_the_problem(run_api: Api, body: bytes, message: str) -> None:
    """A body that does not bind gives HTTP 400, code -400, data null and a message naming the field (never 422)."""
    resp = await run_api.post(body)
    assert resp.status_code == 400, resp.text
    assert resp.headers["content-type"] == "application/json"
    payload = resp.json()
    assert list(payload) == ["code", "message", "data"]
    assert (payload["code"], payload["data"]) == (-400, None)
    assert message in payload["message"]
    assert payload["message"].strip()
    assert run_api.python.requests == []


@pytest.mark.parametrize("language", ["ruby", "python", "javascript", "Python3", "nodejs ", ""])
async def test_unsupported_language_is_http_400(run_api: Api, language: str) -> None:
    """Anything but python3 or nodejs is HTTP 400 with the exact official envelope, and nothing runs."""
    resp = await run_api.run(language=language)
    assert resp.status_code == 400
    assert resp.content == UNSUPPORTED_LANGUAGE
    assert run_api.python.requests == run_api.nodejs.requests == []


async def test_network_request_refused_when_the_network_is_disabled(make_api: MakeApi, run_path: str) -> None:
    """enable_network true while ENABLE_NETWORK=false: HTTP 200 with the official -400 envelope, and nothing runs."""
    api = await make_api(run_path, enable_network=False)
    resp = await api.run(enable_network=True)
    assert resp.status_code == 200
    assert resp.content == NETWORK_DISABLED
    assert api.python.requests == []


async def test_offline_run_allowed_when_the_network_is_disabled(make_api: MakeApi, run_path: str) -> None:
    """enable_network false (or omitted) still runs while the network is disabled."""
    api = await make_api(run_path, enable_network=False)
    assert (await api.run(enable_network=False)).json()["code"] == 0
    assert (await api.client.post("/v1/sandbox/run", json={"language": "nodejs", "code": "1"})).json()["code"] == 0
    assert [r.enable_network for r in api.python.requests + api.nodejs.requests] == [False, False]


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON", "text/plain", None]
)
async def test_json_body_runs_whatever_the_content_type(run_api: Api, content_type: str | None) -> None:
    """A JSON body runs with any content type that is not a form (or none at all)."""
    resp = await run_api.post(b'{"language": "python3", "code": "print(1)"}', content_type)
    assert resp.status_code == 200
    assert resp.json()["code"] == 0
    assert run_api.python.requests[0].code == "print(1)"


async def test_urlencoded_form_runs(run_api: Api) -> None:
    """Form fields bind as gin binds them: booleans from true/false/1/0."""
    body = "language=python3&code=print%28%22a%26b%22%29&preload=x%3D1&enable_network=true"
    resp = await run_api.post(body, "application/x-www-form-urlencoded")
    assert resp.json()["code"] == 0
    (request,) = run_api.python.requests
    assert (request.code, request.preload, request.enable_network) == ('print("a&b")', "x=1", True)


@pytest.mark.parametrize(
    ("value", "expected"), [("true", True), ("1", True), ("TRUE", True), ("false", False), ("0", False), ("", False)]
)
async def test_form_booleans_bind_as_gin_binds_them(run_api: Api, value: str, expected: bool) -> None:
    """enable_network as a form field: true/1 and false/0/empty, in any case."""
    resp = await run_api.post(f"language=python3&code=1&enable_network={value}", "application/x-www-form-urlencoded")
    assert resp.json()["code"] == 0
    assert run_api.python.requests[0].enable_network is expected


def _multipart(fields: dict[str, str], boundary: str = "b0undary") -> tuple[bytes, str]:
    """A multipart/form-data body of text fields only, and its content type."""
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()]
    return "".join([*parts, f"--{boundary}--\r\n"]).encode(), f"multipart/form-data; boundary={boundary}"


async def test_multipart_form_runs(run_api: Api) -> None:
    """A multipart/form-data body binds like a urlencoded one."""
    body, content_type = _multipart({"language": "nodejs", "code": "console.log(1)", "enable_network": "0"})
    resp = await run_api.post(body, content_type)
    assert resp.json()["code"] == 0
    (request,) = run_api.nodejs.requests
    assert (request.code, request.enable_network) == ("console.log(1)", False)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param("language=python3&code=1&enable_network=yes", "enable_network: not a boolean", id="bad-boolean"),
        pytest.param("language=python3", "code: Field required", id="missing-code"),
        pytest.param("language=python3&code=", "code: String should have at least 1", id="empty-code"),
        pytest.param(b"language=python3&code=\xff", "form body is not valid UTF-8", id="not-utf8"),
    ],
)
async def test_malformed_form_is_http_400(run_api: Api, body: str | bytes, message: str) -> None:
    """A form that does not bind is the same -400 envelope as a bad JSON body."""
    resp = await run_api.post(body, "application/x-www-form-urlencoded")
    assert resp.status_code == 400
    assert resp.json() == {"code": -400, "message": resp.json()["message"], "data": None}
    assert message in resp.json()["message"]


async def test_form_with_unknown_language_is_http_400(run_api: Api) -> None:
    """The language check applies to form bodies too."""
    resp = await run_api.post("language=ruby&code=1", "application/x-www-form-urlencoded")
    assert (resp.status_code, resp.content) == (400, UNSUPPORTED_LANGUAGE)


def _padded_run(size: int) -> bytes:
    """A valid run body of exactly ``size`` bytes."""
    head = b'{"language": "python3", "code": "'
    tail = b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


async def _chunks(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def test_body_at_the_limit_runs(make_api: MakeApi, run_path: str) -> None:
    """A body of exactly SANDBOX_MAX_BODY_BYTES is accepted."""
    api = await make_api(run_path, max_body_bytes=LIMIT)
    resp = await api.post(_padded_run(LIMIT))
    assert resp.json()["code"] == 0


async def test_body_over_the_limit_with_content_length_is_413(make_api: MakeApi, run_path: str) -> None:
    """One byte over the limit, declared by Content-Length: HTTP 413 with code -413, and nothing runs."""
    api = await make_api(run_path, max_body_bytes=LIMIT)
    resp = await api.post(_padded_run(LIMIT + 1))
    assert (resp.status_code, resp.content) == (413, TOO_LARGE)
    assert api.python.requests == []


async def test_streamed_body_over_the_limit_is_413(make_api: MakeApi, run_path: str) -> None:
    """Without Content-Length (chunked), the limit is enforced while reading."""
    api = await make_api(run_path, max_body_bytes=LIMIT)
    resp = await api.client.post(
        "/v1/sandbox/run", content=_chunks(_padded_run(LIMIT + 1), 100), headers={"Content-Type": "application/json"}
    )
    assert resp.request.headers.get("content-length") is None
    assert (resp.status_code, resp.content) == (413, TOO_LARGE)
    assert api.python.requests == []


async def test_streamed_body_within_the_limit_runs(make_api: MakeApi, run_path: str) -> None:
    """A chunked body under the limit is read whole, across chunks."""
    api = await make_api(run_path, max_body_bytes=LIMIT)
    resp = await api.client.post(
        "/v1/sandbox/run", content=_chunks(_padded_run(LIMIT), 7), headers={"Content-Type": "application/json"}
    )
    assert resp.json()["code"] == 0
    assert api.python.requests[0].code == json.loads(_padded_run(LIMIT))["code"]


async def test_form_over_the_limit_is_413(make_api: MakeApi, run_path: str) -> None:
    """The limit holds for form bodies too."""
    api = await make_api(run_path, max_body_bytes=LIMIT)
    resp = await api.post("language=python3&code=" + "x" * LIMIT, "application/x-www-form-urlencoded")
    assert (resp.status_code, resp.content) == (413, TOO_LARGE)

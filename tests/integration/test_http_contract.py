"""The HTTP contract of the official service: health, auth, the error envelope, validation, dependencies."""

from __future__ import annotations

import importlib.metadata
import re
import socket
import time

import pytest

pytestmark = pytest.mark.integration

UNSUPPORTED_LANGUAGE = {"code": -400, "message": "unsupported language", "data": None}

AUTHED_ROUTES = [
    pytest.param("POST", "/v1/sandbox/run", {"language": "python3", "code": "print(1)"}, id="run"),
    pytest.param("GET", "/v1/sandbox/dependencies?language=python3", None, id="dependencies"),
    pytest.param("POST", "/v1/sandbox/dependencies/update", {"language": "python3"}, id="dependencies-update"),
    pytest.param("GET", "/v1/sandbox/dependencies/refresh?language=python3", None, id="dependencies-refresh"),
]


def test_health_is_public_and_answers_ok(server):
    """GET /health without a key answers 200 with the JSON string "ok"."""
    resp = server.client(api_key=None).get("/health")
    assert resp.status_code == 200
    assert resp.content == b'"ok"'
    assert resp.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize(("method", "path", "body"), AUTHED_ROUTES)
@pytest.mark.parametrize("api_key", [None, "", "wrong-key", "Dify-Sandbox", "dify-sandbox2"], ids=repr)
def test_sandbox_routes_reject_missing_or_wrong_key_with_empty_401(server, method, path, body, api_key):
    """Every /v1/sandbox route answers a missing or inexact X-Api-Key with HTTP 401 and an empty body."""
    resp = server.client(api_key=api_key).request(method, path, json=body)
    assert resp.status_code == 401, resp.text
    assert resp.content == b""


def test_auth_is_checked_before_the_body(server):
    """A bad body without a key is still a 401, not a validation error."""
    resp = server.client(api_key=None).post(
        "/v1/sandbox/run", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 401
    assert resp.content == b""


def test_run_hello_world_envelope(server):
    """The Dify integration case: print("Hello World") gives exactly the success envelope and data."""
    resp = server.run('print("Hello World")')
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.json() == {
        "code": 0,
        "message": "success",
        "data": {"stdout": "Hello World\n", "stderr": "", "error": "", "exit_code": 0},
    }


@pytest.mark.parametrize("language", ["ruby", "python", "javascript", "Python3", ""])
def test_unsupported_language_is_http_400(server, language):
    """A language other than python3/nodejs gives HTTP 400 with the exact -400 envelope."""
    resp = server.run('print("x")', language=language)
    assert resp.status_code == 400, resp.text
    assert resp.json() == UNSUPPORTED_LANGUAGE


MALFORMED_BODIES = [
    pytest.param(b'{"language": "python3", "code": ', id="invalid-json"),
    pytest.param(b"", id="empty-body"),
    pytest.param(b"[]", id="json-array"),
    pytest.param(b'{"language": "python3", "preload": "", "enable_network": true}', id="missing-code"),
    pytest.param(b'{"language": "python3", "code": "", "enable_network": true}', id="empty-code"),
    pytest.param(b'{"language": "python3", "code": 123, "enable_network": true}', id="code-not-string"),
    pytest.param(b'{"language": "python3", "code": null}', id="code-null"),
    pytest.param(b'{"code": "print(1)", "enable_network": true}', id="missing-language"),
    pytest.param(b'{"language": "python3", "code": "print(1)", "enable_network": "yes"}', id="network-not-bool"),
]


@pytest.mark.parametrize("body", MALFORMED_BODIES)
def test_malformed_run_body_is_http_400_envelope(server, body):
    """A malformed JSON body gives HTTP 400 with code -400, data null and a message (never FastAPI's 422)."""
    resp = server.http.post("/v1/sandbox/run", content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400, resp.text
    payload = resp.json()
    assert set(payload) == {"code", "message", "data"}, payload
    assert payload["code"] == -400
    assert payload["data"] is None
    assert isinstance(payload["message"], str)
    assert payload["message"].strip()


def test_unknown_fields_are_ignored(server):
    """Fields Dify 0.6/0.7 also sent (dependencies) do not change the result."""
    data = server.run_ok('print("ok")', dependencies=[{"name": "jinja2", "version": ""}])
    assert data["stdout"] == "ok\n"


def test_enable_network_may_be_omitted(server):
    """enable_network is optional (default false) and preload may be omitted too."""
    resp = server.http.post("/v1/sandbox/run", json={"language": "python3", "code": 'print("ok")'})
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["stdout"] == "ok\n"


@pytest.mark.parametrize("path", ["/nope", "/v1/sandbox/nope", "/v1/sandbox"])
def test_unknown_route_is_404(server, path):
    """A route that does not exist is HTTP 404 (with or without a key)."""
    assert server.http.get(path).status_code == 404
    assert server.client(api_key=None).get(path).status_code == 404


def _assert_dependency_list(payload):
    assert payload["code"] == 0, payload
    assert payload["message"] == "success", payload
    deps = payload["data"]["dependencies"]
    assert isinstance(deps, list), payload
    for dep in deps:
        assert set(dep) == {"name", "version"}, dep
        assert isinstance(dep["name"], str), dep
        assert isinstance(dep["version"], str), dep
    by_name = {dep["name"].lower(): dep["version"] for dep in deps}
    for name in ("jinja2", "httpx", "requests"):
        assert name in by_name, deps
        # The server runs snippets with the same interpreter as this test process (sys.executable).
        assert by_name[name] == importlib.metadata.version(name), (name, deps)


def test_dependencies_lists_the_importable_packages(server):
    """GET dependencies?language=python3 lists jinja2, httpx and requests with their installed versions."""
    resp = server.http.get("/v1/sandbox/dependencies", params={"language": "python3"})
    assert resp.status_code == 200, resp.text
    _assert_dependency_list(resp.json())


@pytest.mark.parametrize(
    "path", ["/v1/sandbox/dependencies", "/v1/sandbox/dependencies/refresh"], ids=["list", "refresh"]
)
@pytest.mark.parametrize("query", [{"language": "nodejs"}, {"language": "ruby"}, {}], ids=["nodejs", "ruby", "none"])
def test_dependencies_reject_other_languages(server, path, query):
    """The dependency routes only know python3: anything else (or nothing) is HTTP 400 unsupported language."""
    resp = server.http.get(path, params=query)
    assert resp.status_code == 400, resp.text
    assert resp.json() == UNSUPPORTED_LANGUAGE


def test_dependencies_update_then_run(server):
    """POST dependencies/update answers code 0 with data {} and runs keep working right after."""
    resp = server.http.post("/v1/sandbox/dependencies/update", json={"language": "python3"})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"code": 0, "message": "success", "data": {}}
    assert server.run_ok('print("after update")')["stdout"] == "after update\n"


def test_dependencies_refresh_lists_packages(server):
    """GET dependencies/refresh?language=python3 answers code 0 with the same kind of list."""
    resp = server.http.get("/v1/sandbox/dependencies/refresh", params={"language": "python3"}, timeout=60)
    assert resp.status_code == 200, resp.text
    _assert_dependency_list(resp.json())


def _read_http_response(sock: socket.socket) -> bytes:
    """Reads one HTTP/1.1 response with a Content-Length body; returns b"" if the server closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


@pytest.mark.slow
def test_keep_alive_outlives_dify_pool_expiry(server):
    """Scenario: an idle keep-alive connection must survive Dify's 5 s pool expiry.

    1. Open one TCP connection and GET /health on it.
    2. Stay idle for 6 s (longer than Dify's keep-alive expiry and uvicorn's default 5 s).
    3. GET /health again on the same connection: the server must still answer on it.
    """
    request = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(request)
        first = _read_http_response(sock)
        assert first.startswith(b"HTTP/1.1 200"), first
        assert b"connection: close" not in first.lower(), first
        time.sleep(6)
        try:
            sock.sendall(request)
            second = _read_http_response(sock)
        except OSError as exc:  # reset by peer: the server closed the idle connection
            second = repr(exc).encode()
        assert second.startswith(b"HTTP/1.1 200"), f"idle connection was closed by the server: {second!r}"

"""``POST /v1/sandbox/run`` as the fast path serves it, and every request it hands back to the app.

The fast path answers well-formed JSON runs itself; anything else must get exactly the answer the
app gives, with the body it had already read replayed. These requests reach it over real HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from tests.integration.conftest import Server

RUN = "/v1/sandbox/run"


def _chunks(body: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_json_with_charset_parameter_runs(server: Server) -> None:
    body = json.dumps({"language": "python3", "code": "print('ok')", "enable_network": True}).encode()
    resp = server.http.post(RUN, content=body, headers={"Content-Type": "application/json; charset=utf-8"})
    assert resp.status_code == 200
    assert resp.json()["data"]["stdout"] == "ok\n"


def test_chunked_body_runs(server: Server) -> None:
    """A body sent in several chunks (transfer-encoding: chunked) is read whole."""
    body = json.dumps({"language": "python3", "code": "print('x' * 3)", "enable_network": True}).encode()
    resp = server.http.post(RUN, content=_chunks(body, 7), headers={"Content-Type": "application/json"})
    assert resp.status_code == 200
    assert resp.json()["data"]["stdout"] == "xxx\n"


def test_chunked_invalid_body_gets_the_apps_error(server: Server) -> None:
    """A chunked body that does not validate reaches the app whole: its 400 names the field."""
    body = json.dumps({"language": "python3", "code": 42}).encode()
    resp = server.http.post(RUN, content=_chunks(body, 5), headers={"Content-Type": "application/json"})
    assert resp.status_code == 400
    envelope = resp.json()
    assert envelope["code"] == -400
    assert "code" in envelope["message"]
    assert envelope["data"] is None


def test_wrong_key_is_401_with_empty_body(server: Server) -> None:
    resp = server.client("not-the-key").post(RUN, json={"language": "python3", "code": "print(1)"})
    assert resp.status_code == 401
    assert resp.content == b""


def test_unsupported_language_gets_the_apps_error(server: Server) -> None:
    resp = server.run("print(1)", language="ruby")
    assert resp.status_code == 400
    assert resp.json()["code"] == -400


def test_request_id_is_echoed_and_run_is_counted(server: Server) -> None:
    resp = server.http.post(
        RUN,
        json={"language": "python3", "code": "print(1)", "enable_network": True},
        headers={"X-Request-Id": "fast-path-check-1"},
    )
    assert resp.status_code == 200
    assert resp.headers["x-request-id"] == "fast-path-check-1"
    metrics = server.http.get("/metrics").text
    assert 'dify_sandbox_http_requests_total{route="/v1/sandbox/run",status="200"}' in metrics

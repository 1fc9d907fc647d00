"""Bad inputs: malformed bodies, wrong types, odd content types, broken HTTP, slow clients, and a schemathesis run.

One server for the module with `SANDBOX_MAX_BODY_BYTES=1048576` (1 MiB) and `WORKER_TIMEOUT=2`. Every case gets a
clear 4xx (the error envelope, or uvicorn's plain 400 for broken HTTP framing), an HTTP 200 run result, or an HTTP
200 with a negative code, as the API contract says: never a 5xx, never a hang. After each case
the server still answers `/health` and runs a snippet.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Server, attach, processes_with_cmdline
from tests.polling import wait_for

pytestmark = pytest.mark.integration

MAX_BODY = 1024 * 1024
KEY = "dify-sandbox"
RUN = "/v1/sandbox/run"
GOOD = {"language": "python3", "code": "print(1)"}
GOOD_DATA = {"stdout": "1\n", "stderr": "", "error": "", "exit_code": 0}


@pytest.fixture(scope="module")
def _bad_server(long_lived_server: Callable[..., Server]) -> Server:
    return long_lived_server("bad-inputs", SANDBOX_MAX_BODY_BYTES=MAX_BODY, WORKER_TIMEOUT=2)


@pytest.fixture
def server(request: pytest.FixtureRequest, _bad_server: Server) -> Iterator[Server]:
    """The module's server; after the case, it must still answer /health and run a snippet."""
    attach(request.node, _bad_server)
    if _bad_server.proc.poll() is not None:
        pytest.fail(f"the bad-inputs server has exited\n{_bad_server.output()}")
    yield _bad_server
    assert _bad_server.proc.poll() is None, "the server exited"
    # Generous: a loaded CI machine can be slow to answer.
    assert _bad_server.health_status(timeout=30) == 200
    assert _bad_server.run_ok("print('still serving')", timeout=10)["stdout"] == "still serving\n"


def post(
    server: Server, content: bytes | str, content_type: str | None = "application/json", **headers: str
) -> httpx.Response:
    """POST /v1/sandbox/run with a raw body, the API key and the given content type."""
    sent = {"X-Api-Key": KEY, **headers}
    if content_type is not None:
        sent["Content-Type"] = content_type
    return server.http.post(RUN, content=content, headers=sent, timeout=15)


def assert_rejected(resp: httpx.Response, message: str = "", status: int = 400, code: int = -400) -> dict[str, Any]:
    """The error envelope with this HTTP status and code, `data: null`, and a message containing `message`."""
    assert resp.status_code == status, f"HTTP {resp.status_code}: {resp.text[:300]}"
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body: dict[str, Any] = resp.json()
    assert set(body) == {"code", "message", "data"}, body
    assert body["code"] == code, body
    assert body["data"] is None, body
    assert message in body["message"], body
    return body


def assert_runs(resp: httpx.Response, data: dict[str, Any] = GOOD_DATA) -> None:
    """HTTP 200, code 0, and exactly this run result."""
    assert resp.status_code == 200, f"HTTP {resp.status_code}: {resp.text[:300]}"
    assert resp.json() == {"code": 0, "message": "success", "data": data}


# --- raw HTTP over a socket -----------------------------------------------------------------------------------------


def connect(server: Server, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=timeout)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes, bool]:
    """Reads one HTTP response: status, headers (lower-case names), body, and whether the server then closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a full response head: {data[:300]!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    closed = False
    if headers.get("connection", "").lower() == "close":
        sock.settimeout(2)
        closed = sock.recv(1) == b""
    return int(status_line.split()[1]), headers, body[:length], closed


def exchange(server: Server, request: bytes) -> tuple[int, dict[str, str], bytes, bool]:
    with connect(server) as sock:
        sock.sendall(request)
        return read_response(sock)


def raw_post(body: bytes, *, version: str = "HTTP/1.1", extra: bytes = b"", length: int | None = None) -> bytes:
    """A complete POST /v1/sandbox/run request with the API key and a JSON body."""
    size = len(body) if length is None else length
    return (
        f"POST {RUN} {version}\r\nHost: sandbox\r\nX-Api-Key: {KEY}\r\nContent-Type: application/json\r\n".encode()
        + extra
        + f"Content-Length: {size}\r\n\r\n".encode()
        + body
    )


GOOD_BODY = json.dumps(GOOD).encode()
PLAIN_400 = b"Invalid HTTP request received."


# --- malformed JSON and wrong shapes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(b"{nope", "invalid JSON", id="invalid-json"),
        pytest.param(b'{"language": "python3", "code": "print(1)"', "invalid JSON", id="truncated-json"),
        pytest.param(b'{"language": "python3", "code": "print(1)"} trailing', "invalid JSON", id="trailing-garbage"),
        pytest.param(b"[1, 2]", "Input should be an object", id="array"),
        pytest.param(b"42", "Input should be an object", id="number"),
        pytest.param(b'"print(1)"', "Input should be an object", id="string"),
        pytest.param(b"null", "Input should be an object", id="null"),
        pytest.param(b"true", "Input should be an object", id="boolean"),
    ],
)
def test_malformed_or_non_object_json_is_400(server: Server, content: bytes, message: str) -> None:
    """A body that is not a JSON object is HTTP 400, code -400, with a message saying why."""
    assert_rejected(post(server, content), message)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            {"language": 3, "code": "print(1)"}, "language: Input should be a valid string", id="language-int"
        ),
        pytest.param({"language": None, "code": "print(1)"}, "language:", id="language-null"),
        pytest.param({"language": ["python3"], "code": "print(1)"}, "language:", id="language-list"),
        pytest.param(
            {"language": "python3", "code": ["print(1)"]}, "code: Input should be a valid string", id="code-list"
        ),
        pytest.param({"language": "python3", "code": None}, "code:", id="code-null"),
        pytest.param({"language": "python3", "code": 1}, "code:", id="code-int"),
        pytest.param({"language": "python3", "code": {"src": "print(1)"}}, "code:", id="code-object"),
        pytest.param({**GOOD, "preload": 1}, "preload: Input should be a valid string", id="preload-int"),
        pytest.param(
            {**GOOD, "enable_network": "true"},
            "enable_network: Input should be a valid boolean",
            id="enable_network-string",
        ),
        pytest.param({**GOOD, "enable_network": None}, "enable_network:", id="enable_network-null"),
        pytest.param({**GOOD, "enable_network": 1}, "enable_network:", id="enable_network-int"),
    ],
)
def test_wrong_field_types_are_400_naming_the_field(server: Server, body: dict[str, Any], message: str) -> None:
    """A field of the wrong JSON type is HTTP 400, code -400, and the message names the field."""
    assert_rejected(server.http.post(RUN, json=body), message)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param({"language": "python3"}, "code: Field required", id="no-code"),
        pytest.param({"code": "print(1)"}, "language: Field required", id="no-language"),
        pytest.param({}, "Field required", id="empty-object"),
        pytest.param(
            {"language": "python3", "code": ""}, "code: String should have at least 1 character", id="empty-code"
        ),
        pytest.param({"Language": "python3", "Code": "print(1)"}, "Field required", id="capitalised-names"),
    ],
)
def test_missing_or_empty_fields_are_400(server: Server, body: dict[str, Any], message: str) -> None:
    """A missing `language` or `code`, or an empty `code`, is HTTP 400, code -400, naming the field."""
    assert_rejected(server.http.post(RUN, json=body), message)


@pytest.mark.parametrize("content_type", ["application/json", None])
def test_empty_body_is_400(server: Server, content_type: str | None) -> None:
    """An empty body (with or without a content type) is HTTP 400, code -400."""
    assert_rejected(post(server, b"", content_type), "request body is empty")


@pytest.mark.parametrize("language", ["python", "PYTHON3", "python3 ", "python3\x00", "", "javascript", "node", "go"])
def test_unsupported_languages_are_400(server: Server, language: str) -> None:
    """Anything but `python3` and `nodejs` is HTTP 400 `unsupported language` (Dify maps javascript itself)."""
    body = assert_rejected(server.http.post(RUN, json={"language": language, "code": "print(1)"}))
    assert body == {"code": -400, "message": "unsupported language", "data": None}


def test_extra_fields_are_ignored(server: Server) -> None:
    """Unknown fields (old Dify sent `dependencies`) are ignored and the run goes ahead."""
    body = {**GOOD, "dependencies": [{"name": "numpy", "version": ""}], "x": {"y": [1, None]}}
    assert_runs(server.http.post(RUN, json=body))


def test_duplicate_keys_take_the_last_value(server: Server) -> None:
    """Duplicate keys in the JSON object: the last one wins (as Go's encoding/json does)."""
    content = b'{"language": "nodejs", "language": "python3", "code": "print(0)", "code": "print(1)"}'
    assert_runs(post(server, content))


def test_deeply_nested_json_is_400(server: Server) -> None:
    """100,000 nested arrays in an extra field are HTTP 400 (a recursion limit), not a crash."""
    content = b'{"language": "python3", "code": "print(1)", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert_rejected(post(server, content), "invalid JSON")


# --- size -----------------------------------------------------------------------------------------------------------


def test_body_over_the_limit_is_413(server: Server) -> None:
    """A body just over SANDBOX_MAX_BODY_BYTES is HTTP 413 with the envelope, code -413, naming the limit."""
    body = json.dumps({"language": "python3", "code": "#" * MAX_BODY}).encode()
    assert_rejected(post(server, body), str(MAX_BODY), status=413, code=-413)


def test_chunked_body_over_the_limit_is_413(server: Server) -> None:
    """The same without a Content-Length (chunked upload): the server stops reading at the limit and answers 413."""
    chunks = [b'{"language": "python3", "code": "'] + [b"#" * 65536] * 20 + [b'"}']
    resp = server.http.post(RUN, content=iter(chunks), headers={"Content-Type": "application/json"}, timeout=15)
    assert_rejected(resp, str(MAX_BODY), status=413, code=-413)


def test_form_and_multipart_bodies_over_the_limit_are_413(server: Server) -> None:
    """Form and multipart bodies over the limit are HTTP 413 as well."""
    form = b"language=python3&code=" + b"%23" * MAX_BODY
    assert_rejected(post(server, form, "application/x-www-form-urlencoded"), status=413, code=-413)
    files = {"language": (None, "python3"), "code": (None, "#" * (MAX_BODY + 10))}
    assert_rejected(server.http.post(RUN, files=files), status=413, code=-413)


def test_body_just_under_the_limit_runs(server: Server) -> None:
    """A body a little under the limit (a 1 MiB comment and a print) still runs."""
    code = "#" * (MAX_BODY - 200) + "\nprint(1)"
    assert_runs(server.http.post(RUN, json={"language": "python3", "code": code}))


# --- encodings and content types ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "content_type", "message"),
    [
        pytest.param(
            b'{"language": "python3", "code": "print(\xff)"}', "application/json", "invalid JSON", id="json-with-0xff"
        ),
        pytest.param(
            '{"language": "python3", "code": "print(\'\xe9\')"}'.encode("latin-1"),
            "application/json; charset=latin-1",
            "invalid JSON",
            id="json-in-latin-1",
        ),
        pytest.param(
            b'{"language": "python3", "code": "print(\'\\ud800\')"}',
            "application/json",
            "invalid JSON",
            id="json-lone-surrogate-escape",
        ),
        pytest.param(
            b"language=python3&code=print(\xff)",
            "application/x-www-form-urlencoded",
            "not valid UTF-8",
            id="form-with-0xff",
        ),
    ],
)
def test_non_utf8_bodies_are_400(server: Server, content: bytes, content_type: str, message: str) -> None:
    """Bytes that are not UTF-8 (or a lone surrogate escape) are HTTP 400, code -400."""
    assert_rejected(post(server, content, content_type), message)


def test_json_with_a_charset_parameter_runs(server: Server) -> None:
    """`application/json; charset=utf-8` is JSON."""
    assert_runs(post(server, GOOD_BODY, "application/json; charset=utf-8"))


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        pytest.param(b"<run><language>python3</language><code>print(1)</code></run>", "application/xml", id="xml"),
        pytest.param(b"print(1)", "text/plain", id="text-plain-code"),
        pytest.param(b"\x00\x01\x02\xff", "application/octet-stream", id="octet-stream"),
    ],
)
def test_other_content_types_with_non_json_bodies_are_400(server: Server, content: bytes, content_type: str) -> None:
    """XML, plain text or binary bodies are HTTP 400, code -400 (read as JSON, which they are not)."""
    assert_rejected(post(server, content, content_type), "invalid JSON")


def test_text_plain_with_a_json_body_is_read_as_json(server: Server) -> None:
    """A JSON body sent as text/plain runs: any type but form and multipart is read as JSON (lenient, documented)."""
    assert_runs(post(server, GOOD_BODY, "text/plain"))


# --- form fields, as the official service accepts them -------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "data"),
    [
        pytest.param(b"language=python3&code=print(1)", GOOD_DATA, id="plain"),
        pytest.param(
            b"language=python3&code=print%28%22a%20b%22%29&enable_network=true",
            {**GOOD_DATA, "stdout": "a b\n"},
            id="escaped-network-true",
        ),
        pytest.param(b"language=python3&code=print(1)&enable_network=0&preload=&junk=1", GOOD_DATA, id="extra-fields"),
        pytest.param(b"language=nodejs&code=console.log(1)", GOOD_DATA, id="nodejs"),
    ],
)
def test_form_encoded_bodies_run(server: Server, content: bytes, data: dict[str, Any]) -> None:
    """application/x-www-form-urlencoded fields run like the JSON body."""
    assert_runs(post(server, content, "application/x-www-form-urlencoded"), data)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(b"%%%&&&=", "language: Field required", id="junk"),
        pytest.param(b"language=python3", "code: Field required", id="no-code"),
        pytest.param(b"language=python3&code=", "code: String should have at least 1 character", id="empty-code"),
        pytest.param(
            b"language=python3&code=print(1)&enable_network=maybe", "enable_network: not a boolean", id="bad-boolean"
        ),
        pytest.param(b"language=cobol&code=print(1)", "unsupported language", id="bad-language"),
    ],
)
def test_bad_form_bodies_are_400(server: Server, content: bytes, message: str) -> None:
    """A form body with missing, empty or invalid fields is HTTP 400, code -400, naming the problem."""
    assert_rejected(post(server, content, "application/x-www-form-urlencoded"), message)


def test_multipart_fields_run(server: Server) -> None:
    """multipart/form-data fields run like the JSON body."""
    files = {"language": (None, "python3"), "code": (None, "print(1)")}
    assert_runs(server.http.post(RUN, files=files))


@pytest.mark.parametrize(
    ("content", "content_type", "message"),
    [
        pytest.param(b"--xx\r\nbroken", "multipart/form-data; boundary=xx", "Field required", id="truncated"),
        pytest.param(b"--xx\r\nbroken", "multipart/form-data", "invalid multipart body", id="no-boundary"),
        pytest.param(b"", "multipart/form-data; boundary=xx", "Field required", id="empty"),
    ],
)
def test_broken_multipart_is_400(server: Server, content: bytes, content_type: str, message: str) -> None:
    """A broken multipart body is HTTP 400, code -400."""
    assert_rejected(post(server, content, content_type), message)


def test_multipart_file_part_is_not_the_code(server: Server) -> None:
    """An uploaded file named `code` is not a form field: `code` is missing, HTTP 400."""
    files: dict[str, Any] = {"language": (None, "python3"), "code": ("main.py", b"print(1)", "text/x-python")}
    assert_rejected(server.http.post(RUN, files=files), "code: Field required")


# --- what the code itself contains --------------------------------------------------------------------------------


def test_nul_byte_in_code_is_a_run_result(server: Server) -> None:
    """A NUL byte in the code is the snippet's SyntaxError (exit 255), not a request error."""
    resp = server.http.post(RUN, json={"language": "python3", "code": "print(1)\x00"})
    assert resp.status_code == 200
    data = resp.json()["data"]
    assert data["exit_code"] == 255
    assert "source code string cannot contain null bytes" in data["stderr"]


def test_nul_byte_inside_a_string_round_trips(server: Server) -> None:
    """A NUL written by the snippet comes back as \\u0000 in stdout."""
    data = server.run_ok("print('a\\x00b')")
    assert data["stdout"] == "a\x00b\n"


def test_whitespace_only_code_runs(server: Server) -> None:
    """Code of only whitespace is not empty: it runs and prints nothing."""
    assert_runs(server.http.post(RUN, json={"language": "python3", "code": " \n\t "}), {**GOOD_DATA, "stdout": ""})


# --- the URL, the method, the headers ------------------------------------------------------------------------------


def test_junk_query_string_is_ignored(server: Server) -> None:
    """A junk query string (bad escapes, control bytes, repeated names) does not change the run."""
    junk = RUN.encode() + b"?%ff%fe=%01&&a&a=1&language=nodejs&code="
    status, _, body, _ = exchange(server, raw_post(GOOD_BODY).replace(RUN.encode(), junk, 1))
    assert status == 200
    assert json.loads(body)["data"] == GOOD_DATA


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "GET", "TRACE"])
def test_other_methods_on_the_run_route_are_404(server: Server, method: str) -> None:
    """Any other known method on /v1/sandbox/run is gin's plain-text 404 (as the official service answers)."""
    resp = server.http.request(method, RUN, json=GOOD)
    assert resp.status_code == 404
    assert resp.text == "404 page not found"


def test_unknown_method_is_400(server: Server) -> None:
    """A method HTTP does not know (`FOO`) is a plain HTTP 400 from the HTTP layer."""
    status, _, body, _ = exchange(server, b"FOO /v1/sandbox/run HTTP/1.1\r\nHost: sandbox\r\n\r\n")
    assert (status, body) == (400, PLAIN_400)


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Junk: \xff\xfe\x01\r\n\r\n", id="control-bytes-in-value"),
        pytest.param(b"GET /health HTTP/1.1\r\nHost: x\r\nthis is not a header\r\n\r\n", id="line-without-colon"),
        pytest.param(b"GET /health HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n", id="space-in-name"),
        pytest.param(raw_post(GOOD_BODY).replace(b"Content-Length: ", b"Content-Length: x"), id="non-numeric-length"),
        pytest.param(
            raw_post(b"0\r\n\r\n", length=5, extra=b"Transfer-Encoding: chunked\r\n"), id="length-and-chunked"
        ),
        pytest.param(
            raw_post(b"", extra=b"Transfer-Encoding: chunked\r\n").replace(b"Content-Length: 0\r\n", b"")
            + b"zz\r\nabc\r\n0\r\n\r\n",
            id="bad-chunk-size",
        ),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64), id="tls-client-hello"),
    ],
)
def test_broken_http_is_a_plain_400(server: Server, request_bytes: bytes) -> None:
    """Garbage headers and broken framing get the HTTP layer's plain 400 and a closed connection."""
    status, headers, body, closed = exchange(server, request_bytes)
    assert (status, body) == (400, PLAIN_400)
    assert headers.get("connection") == "close"
    assert closed


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(b"X-Api-Key: dify-sandbox\xff\r\n", id="non-ascii-key"),
        pytest.param(b"X-Api-Key: wrong\r\nX-Api-Key: dify-sandbox\r\n", id="key-twice"),
        pytest.param(b"X-Api-Key: dify-sandbox \x01\r\n", id="key-with-control-byte"),
    ],
)
def test_garbage_api_keys_are_401(server: Server, headers: bytes) -> None:
    """A key with odd bytes, or sent twice, is not the key: HTTP 401 with an empty body."""
    request = (
        f"POST {RUN} HTTP/1.1\r\nHost: sandbox\r\nContent-Type: application/json\r\n".encode()
        + headers
        + f"Content-Length: {len(GOOD_BODY)}\r\n\r\n".encode()
        + GOOD_BODY
    )
    status, _, body, _ = exchange(server, request)
    if status == 400:  # the HTTP layer may refuse the header itself
        assert body == PLAIN_400
    else:
        assert (status, body) == (401, b"")


def test_huge_and_many_headers_are_handled(server: Server) -> None:
    """A 200 KB header value and 5,000 headers get an answer (200 or a 4xx), never a 5xx or a hang."""
    for request in (
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(5000)) + b"\r\n",
    ):
        status, _, _, _ = exchange(server, request)
        assert status == 200 or 400 <= status < 500, status


def test_http_1_0_request_runs_and_closes(server: Server) -> None:
    """An HTTP/1.0 run request is answered and the connection closed after the body."""
    status, headers, body, closed = exchange(server, raw_post(GOOD_BODY, version="HTTP/1.0"))
    assert status == 200
    assert json.loads(body) == {"code": 0, "message": "success", "data": GOOD_DATA}
    assert headers.get("connection") == "close"
    assert closed


# --- slow and vanishing clients ------------------------------------------------------------------------------------


def test_slow_body_does_not_block_other_requests(server: Server) -> None:
    """Scenario: a client trickles its body one byte every 20 ms (about 1.5 s in all).

    1. Send the head and the first bytes of the body.
    2. Meanwhile a normal run answers within 2 s, twice, as does /health.
    3. Trickle the rest: the slow request gets its own, correct result.
    """
    request = raw_post(GOOD_BODY)
    head_size = len(request) - len(GOOD_BODY)
    with connect(server, timeout=15) as sock:
        sock.sendall(request[: head_size + 5])
        for _ in range(2):
            started = time.monotonic()
            assert server.run_ok("print('meanwhile')", timeout=5)["stdout"] == "meanwhile\n"
            assert time.monotonic() - started < 2.0
        assert server.health_status(timeout=2) == 200
        for index in range(head_size + 5, len(request)):
            sock.sendall(request[index : index + 1])
            time.sleep(0.02)
        status, _, body, _ = read_response(sock)
    assert status == 200
    assert json.loads(body)["data"] == GOOD_DATA


def test_many_stalled_headers_do_not_block_other_requests(server: Server) -> None:
    """Thirty connections that send half a request head and stall do not stop runs or /health."""
    with contextlib.ExitStack() as stack:
        for _ in range(30):
            sock = stack.enter_context(connect(server))
            sock.sendall(f"POST {RUN} HTTP/1.1\r\nHost: sandbox\r\nX-Api-Key: {KEY}\r\n".encode())
        started = time.monotonic()
        assert server.run_ok("print('unblocked')", timeout=5)["stdout"] == "unblocked\n"
        assert server.health_status(timeout=2) == 200
        assert time.monotonic() - started < 2.0


def _vanish_mid_body(server: Server) -> None:
    """Announces 10,000 bytes of body, sends 10, and closes the connection."""
    with connect(server) as sock:
        sock.sendall(raw_post(GOOD_BODY[:10], length=10_000))
    time.sleep(0.1)


def _http_500s(server: Server) -> float:
    for line in server.http.get("/metrics").text.splitlines():
        if line.startswith('dify_sandbox_http_requests_total{route="/v1/sandbox/run",status="500"}'):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.slow
def test_client_that_vanishes_mid_body_does_not_stall_the_server(server: Server) -> None:
    """Right after a client closes mid-body, /health still answers within 0.5 s."""
    _vanish_mid_body(server)
    started = time.monotonic()
    status = server.health_status(timeout=30)
    seconds = time.monotonic() - started
    assert status == 200
    assert seconds < 0.5, f"/health took {seconds:.1f} s after a client vanished mid-body"


@pytest.mark.slow
def test_client_that_vanishes_mid_body_is_not_a_server_error(server: Server) -> None:
    """A client closing mid-body is not counted as an HTTP 500 of the server."""
    before = _http_500s(server)
    _vanish_mid_body(server)
    assert server.health_status(timeout=30) == 200
    assert _http_500s(server) == before


def _python_runs(server: Server, outcome: str) -> float:
    prefix = f'dify_sandbox_runs_total{{language="python3",outcome="{outcome}"}}'
    for line in server.http.get("/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0


def test_client_that_vanishes_mid_run(server: Server, sleep_marker: str) -> None:
    """Scenario: a client that leaves mid-run leaves no process of its run behind, and the server serves on.

    1. Send a run that starts `sleep <marker>`; close the connection once that process exists.
    2. The run still ends at WORKER_TIMEOUT (2 s): it is counted as a timeout.
    3. Its `sleep` is killed with it; the fixture then checks that the server still answers and runs.
    """
    before = _python_runs(server, "timeout")
    code = f"import subprocess\nsubprocess.run(['sleep', '{sleep_marker}'])\nprint(1)"
    with connect(server) as sock:
        sock.sendall(raw_post(json.dumps({"language": "python3", "code": code}).encode()))
        assert wait_for(lambda: processes_with_cmdline(["sleep", sleep_marker]), timeout=10), "the run never started"
    assert wait_for(lambda: _python_runs(server, "timeout") > before, timeout=20), "the run was not ended"
    assert wait_for(lambda: not processes_with_cmdline(["sleep", sleep_marker]), timeout=10), "the run's sleep lives on"


# --- schemathesis against the server's own OpenAPI schema ----------------------------------------------------------

# Status codes the contract gives each operation (API.md): 200 (a run result, or code -400/-500 in the envelope),
# 400 (malformed body, unsupported language), 413 (body over the limit), 503 (overload). The schema documents only
# 200 (and FastAPI's unused 422), so schemathesis' own status_code_conformance is not used.
ALLOWED_STATUS = {
    "POST /v1/sandbox/run": {200, 400, 413, 503},
    "GET /v1/sandbox/dependencies": {200, 400},
    "POST /v1/sandbox/dependencies/update": {200, 400, 413},
    "GET /v1/sandbox/dependencies/refresh": {200, 400},
}


def contract_status(ctx: Any, response: Any, case: Any) -> bool:
    """The status is one the contract allows for the operation, and the body is the envelope."""
    label = case.operation.label
    assert response.status_code in ALLOWED_STATUS[label], f"{label}: HTTP {response.status_code} {response.text[:300]}"
    body = json.loads(response.text)
    assert set(body) == {"code", "message", "data"}, body
    if response.status_code == 200:
        assert body["code"] in (0, -400, -500), body
        if label == "POST /v1/sandbox/run" and body["code"] == 0:
            assert set(body["data"]) == {"stdout", "stderr", "error", "exit_code"}, body
    else:
        assert body["code"] < 0, body
        assert body["data"] is None, body
    return True


SCHEMATHESIS_CASES = [
    *(
        pytest.param(operation, mode, id=f"{operation}-{mode}")
        for operation in sorted(ALLOWED_STATUS)
        for mode in ("positive", "negative")
    ),
    # Random strings are almost never a supported language; this variant makes every generated body a real run.
    pytest.param("POST /v1/sandbox/run", "runnable", id="POST /v1/sandbox/run-runnable"),
]


def _runnable(case_and_language: tuple[Any, str]) -> Any:
    case, language = case_and_language
    case.body["language"] = language
    return case


@pytest.mark.slow
@pytest.mark.parametrize(("operation", "mode"), SCHEMATHESIS_CASES)
def test_schemathesis_finds_no_server_error(server: Server, operation: str, mode: str) -> None:
    """Scenario: requests generated from the server's own `GET /openapi.json`, per /v1/sandbox operation.

    1. Load the live schema; it has exactly the four /v1/sandbox operations of the contract.
    2. Generate 50 requests for the operation that fit its schema (positive), break it (negative), or fit it with
       `language` set to python3 or nodejs (runnable: the random `code` really runs), each sent with the API key.
    3. None is a 5xx; each status is one the contract gives the operation, with the error envelope.

    (`schemathesis.pytest.from_fixture` would be the usual way, but 4.32.5 reads `request.node._nodeid`, which
    pytest 9 no longer has; the operation's own Hypothesis strategy works with any pytest.)
    """
    schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the tests dependency group")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis.checks import not_a_server_error

    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", timeout=10).include(path_regex="^/v1/sandbox/")
    labels = {result.ok().label for result in schema.get_all_operations()}
    assert labels == set(ALLOWED_STATUS), labels
    method, path = operation.split()
    if mode == "runnable":
        positive = schema[path][method].as_strategy(schemathesis.GenerationMode.POSITIVE)
        strategy = st.tuples(positive, st.sampled_from(["python3", "nodejs"])).map(_runnable)
    else:
        strategy = schema[path][method].as_strategy(schemathesis.GenerationMode(mode))

    @given(case=strategy)
    @settings(
        max_examples=50,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def check(case: Any) -> None:
        case.call_and_validate(
            base_url=server.url, headers={"X-Api-Key": KEY}, timeout=15, checks=[not_a_server_error, contract_status]
        )

    check()

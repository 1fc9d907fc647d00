"""``POST /v1/sandbox/run`` answers: the success envelope byte for byte, what reaches the executor, its failures."""

from __future__ import annotations

import json

import pytest
from structlog.testing import capture_logs

from dify_sandbox.errors import ExecutorError, ZygoteUnavailableError
from dify_sandbox.executors.base import RunRequest, RunResult
from dify_sandbox.executors.outcome import RunOutcome

from .conftest import Api, MakeApi

pytestmark = [pytest.mark.api, pytest.mark.anyio]


async def test_success_envelope_is_byte_exact(run_api: Api) -> None:
    """Dify's hello world: compact JSON, code 0, "success", the four data fields in order."""
    run_api.python.script(RunResult("Hello World\n", "", RunOutcome.exited(0)))
    resp = await run_api.run('print("Hello World")')
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.content == (
        b'{"code":0,"message":"success","data":{"stdout":"Hello World\\n","stderr":"","error":"","exit_code":0}}'
    )


async def test_failed_run_is_a_success_envelope_with_the_error(run_api: Api) -> None:
    """A non-zero exit is a run result (HTTP 200, code 0): error is the exit line, then all of stderr."""
    stderr = "Traceback (most recent call last):\nZeroDivisionError: division by zero\n"
    run_api.python.script(RunResult("partial\n", stderr, RunOutcome.exited(255)))
    resp = await run_api.run("1 / 0")
    assert resp.status_code == 200
    assert resp.json() == {
        "code": 0,
        "message": "success",
        "data": {
            "stdout": "partial\n",
            "stderr": stderr,
            "error": "process exited with code 255\n" + stderr,
            "exit_code": 255,
        },
    }


async def test_timed_out_run_names_the_timeout(run_api: Api) -> None:
    """A run killed at its time limit: exit code -1 and the sandbox's "error: timeout" line before stderr."""
    run_api.python.script(RunResult("before\n", "late\n", RunOutcome.observed(-1, timed_out=True)))
    data = (await run_api.run("while True: pass")).json()["data"]
    assert data == {
        "stdout": "before\n",
        "stderr": "late\n",
        "error": "process exited with code -1\nerror: timeout\nlate\n",
        "exit_code": -1,
    }


async def test_warnings_on_stderr_leave_error_empty(run_api: Api) -> None:
    """Exit 0 with stderr output (warnings, logging) keeps error empty, so Dify does not fail the node."""
    run_api.python.script(RunResult("ok\n", "UserWarning: careful\n", RunOutcome.exited(0)))
    data = (await run_api.run("import warnings")).json()["data"]
    assert (data["stderr"], data["error"], data["exit_code"]) == ("UserWarning: careful\n", "", 0)


async def test_non_ascii_output_is_sent_raw(run_api: Api) -> None:
    """Non-ASCII output is UTF-8 in the body, not \\u escapes (as Go's encoder writes it)."""
    run_api.python.script(RunResult("héllo ✓ 你好\n", "", RunOutcome.exited(0)))
    resp = await run_api.run("print('héllo ✓ 你好')")
    assert "héllo ✓ 你好".encode() in resp.content
    assert resp.json()["data"]["stdout"] == "héllo ✓ 你好\n"


async def test_lone_surrogate_in_output_still_gives_valid_json(run_api: Api) -> None:
    """A lone surrogate a snippet printed becomes a JSON \\u escape, so the body stays parseable."""
    run_api.python.script(RunResult("a\ud800b\n", "", RunOutcome.exited(0)))
    resp = await run_api.run("print('a\\ud800b')")
    assert resp.status_code == 200
    assert json.loads(resp.content)["data"]["stdout"] == "a\ud800b\n"


async def test_executor_gets_the_request_as_sent(make_api: MakeApi, run_path: str) -> None:
    """Language, code, preload and enable_network reach the executor unchanged, with WORKER_TIMEOUT."""
    api = await make_api(run_path, worker_timeout=7)
    resp = await api.run("print(x)", preload="x = 1", enable_network=False)
    assert resp.status_code == 200
    assert api.python.requests == [RunRequest("python3", "print(x)", "x = 1", False, 7.0)]
    assert api.nodejs.requests == []


async def test_nodejs_runs_go_to_the_node_executor(run_api: Api) -> None:
    """language nodejs is run by the node executor, python3 by the python one."""
    resp = await run_api.run("console.log(1)", language="nodejs")
    assert resp.json()["data"]["stdout"] == "ran nodejs\n"
    assert [r.language for r in run_api.nodejs.requests] == ["nodejs"]
    assert run_api.python.requests == []


async def test_unknown_fields_are_ignored(run_api: Api) -> None:
    """Fields older Dify versions also sent (dependencies) change nothing."""
    resp = await run_api.run("print(1)", dependencies=[{"name": "jinja2", "version": ""}])
    assert resp.json()["code"] == 0
    assert len(run_api.python.requests) == 1


async def test_enable_network_and_preload_may_be_omitted(run_api: Api) -> None:
    """Only language and code are required: enable_network defaults to false, preload to empty."""
    resp = await run_api.client.post("/v1/sandbox/run", json={"language": "python3", "code": "print(1)"})
    assert resp.json()["code"] == 0
    assert run_api.python.requests[0].enable_network is False
    assert run_api.python.requests[0].preload == ""


@pytest.mark.parametrize(
    "error", [ExecutorError("the run's pipes broke"), ZygoteUnavailableError("zygote died mid-run")], ids=repr
)
async def test_executor_failure_is_the_500_envelope(run_api: Api, error: ExecutorError) -> None:
    """An executor that fails gives HTTP 200 with code -500, its message and data null, and logs an error."""
    run_api.python.script(error)
    with capture_logs() as logs:
        resp = await run_api.run()
    assert resp.status_code == 200
    assert resp.content == b'{"code":-500,"message":"%s","data":null}' % str(error).encode()
    assert {"event": "Run failed in the executor", "log_level": "error"}.items() <= logs[-1].items()


async def test_unexpected_error_is_http_500_without_details(make_api: MakeApi, run_path: str) -> None:
    """A bug (not a SandboxError) gives HTTP 500 with code -500 and a fixed message: nothing internal leaks."""
    api = await make_api(run_path, raise_app_exceptions=False)
    api.python.script(RuntimeError("secret internals"))
    resp = await api.run()
    assert resp.status_code == 500
    assert resp.content == b'{"code":-500,"message":"internal error","data":null}'


async def test_failed_runs_give_their_admission_back(make_api: MakeApi, run_path: str) -> None:
    """After an executor failure and a bug, with MAX_REQUESTS=1, the next run is still admitted and answered."""
    api = await make_api(run_path, raise_app_exceptions=False, max_requests=1, max_workers=1)
    api.python.script(
        ExecutorError("zygote died"), RuntimeError("a bug"), RunResult("again\n", "", RunOutcome.exited(0))
    )
    assert (await api.run()).json()["code"] == -500
    assert (await api.run()).status_code == 500
    assert (await api.run()).json()["data"]["stdout"] == "again\n"
    assert api.service.admission.in_flight == 0


async def test_request_id_is_kept_and_echoed(run_api: Api) -> None:
    """An incoming X-Request-Id comes back on the response; without one, a fresh id is generated."""
    resp = await run_api.client.post(
        "/v1/sandbox/run", json={"language": "python3", "code": "1"}, headers={"X-Request-Id": "abc-123"}
    )
    assert resp.headers["x-request-id"] == "abc-123"
    generated = (await run_api.run()).headers["x-request-id"]
    assert len(generated) == 32
    assert generated != (await run_api.run()).headers["x-request-id"]


async def test_fast_path_serves_well_formed_json_runs_itself(api: Api) -> None:
    """As deployed, a well-formed JSON run never reaches the framework; other requests do."""
    assert (await api.run()).json()["code"] == 0
    assert api.framework.paths == []
    assert (await api.post(b"language=python3&code=1", "application/x-www-form-urlencoded")).json()["code"] == 0
    assert api.framework.paths == ["/v1/sandbox/run"]

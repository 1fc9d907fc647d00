"""`dify-sandbox run FILE` and `dify-sandbox check`: operator commands that print JSON, run as real processes.

Each command runs as `python -m dify_sandbox ...` in its own session, from an empty temp dir, with
the same scrubbed environment the server tests use; the test reads its stdout as JSON and checks
that nothing of the command's session outlives it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import SERVER_ENV_NAMES, session_members

LANGUAGES = ("python3", "nodejs")

pytestmark = pytest.mark.integration

COMMAND_TIMEOUT = 60.0


def dify_sandbox(cwd: Path, *args: str, **env: object) -> tuple[int, Any, str]:
    """Runs `python -m dify_sandbox ARGS` in `cwd`; returns (exit code, stdout parsed as JSON, stderr)."""
    full_env = {
        key: value
        for key, value in os.environ.items()
        if key not in SERVER_ENV_NAMES and not key.upper().startswith("SANDBOX_")
    }
    full_env.update({key: str(value) for key, value in env.items()})
    proc = subprocess.Popen(
        [sys.executable, "-m", "dify_sandbox", *args],
        cwd=cwd,
        env=full_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=COMMAND_TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.communicate()
    left = session_members(proc.pid)
    deadline = time.monotonic() + 3
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = session_members(proc.pid)
    assert not left, f"processes outlived the command: {[p.pid for p in left]}"
    text = stderr.decode(errors="replace")
    try:
        document = json.loads(stdout)
    except ValueError:
        pytest.fail(f"stdout is not JSON: {stdout!r}\nstderr:\n{text}")
    return proc.returncode, document, text


def snippet(tmp_path: Path, name: str, code: str) -> Path:
    path = tmp_path / name
    path.write_text(code, encoding="utf-8")
    return path


def test_run_python_file_prints_the_api_envelope(tmp_path):
    """`run FILE` prints exactly the API's success envelope for Dify's "Hello World" test, and exits 0."""
    path = snippet(tmp_path, "hello.py", 'print("Hello World")\n')
    code, body, _ = dify_sandbox(tmp_path, "run", str(path))
    assert body == {
        "code": 0,
        "message": "success",
        "data": {"stdout": "Hello World\n", "stderr": "", "error": "", "exit_code": 0},
    }
    assert code == 0


def test_run_nodejs_file(tmp_path):
    """`run FILE --language nodejs` runs the file in node; JSON.stringify output comes back byte-exact."""
    path = snippet(tmp_path, "hello.js", 'console.log(JSON.stringify({"Hello": "World"}))\n')
    code, body, _ = dify_sandbox(tmp_path, "run", str(path), "--language", "nodejs")
    assert body["code"] == 0, body
    assert body["data"]["stdout"] == '{"Hello":"World"}\n'
    assert body["data"]["exit_code"] == 0
    assert code == 0


def test_run_is_quiet_unless_verbose(tmp_path):
    """`run FILE` writes only the answer (stderr stays empty); with --verbose the service's log lines go to stderr."""
    path = snippet(tmp_path, "hello.py", 'print("Hello World")\n')
    code, body, stderr = dify_sandbox(tmp_path, "run", str(path))
    assert body["data"]["stdout"] == "Hello World\n"
    assert stderr == ""
    assert code == 0
    code, body, stderr = dify_sandbox(tmp_path, "run", str(path), "--verbose")
    assert body["data"]["stdout"] == "Hello World\n"
    assert "Zygote ready" in stderr
    assert code == 0


@pytest.mark.parametrize("name", ["hello.js", "hello.mjs", "hello.cjs"])
def test_run_infers_nodejs_from_the_extension(tmp_path, name):
    """A .js, .mjs or .cjs file runs in node without --language, and only node is started."""
    path = snippet(tmp_path, name, 'console.log(JSON.stringify({"Hello": "World"}))\n')
    code, body, stderr = dify_sandbox(tmp_path, "run", str(path), "--verbose")
    assert body["data"]["stdout"] == '{"Hello":"World"}\n', body
    assert code == 0
    assert "Node pool ready" in stderr
    assert "Zygote ready" not in stderr


def test_run_python_file_starts_no_node(tmp_path):
    """A .py file starts the zygote only: no node process, no node pool lines in the service's log."""
    path = snippet(tmp_path, "hello.py", 'print("Hello World")\n')
    code, body, stderr = dify_sandbox(tmp_path, "run", str(path), "--verbose")
    assert body["data"]["stdout"] == "Hello World\n"
    assert "Zygote ready" in stderr
    assert "Node.js found" not in stderr
    assert "Node pool" not in stderr
    assert code == 0


def test_explicit_language_wins_over_the_extension(tmp_path):
    """--language python3 runs a .js file as Python."""
    path = snippet(tmp_path, "really-python.js", 'print("from python")\n')
    code, body, _ = dify_sandbox(tmp_path, "run", str(path), "--language", "python3")
    assert body["data"]["stdout"] == "from python\n", body
    assert code == 0


def test_run_failing_snippet_exits_1_with_the_run_result(tmp_path):
    """An uncaught exception is a run result (code 0, exit_code 255, traceback in `error`); the command exits 1."""
    path = snippet(tmp_path, "bad.py", "1 / 0\n")
    code, body, _ = dify_sandbox(tmp_path, "run", str(path))
    assert body["code"] == 0
    data = body["data"]
    assert data["exit_code"] == 255
    assert data["error"].startswith("process exited with code 255\n")
    assert "ZeroDivisionError" in data["stderr"]
    assert code == 1


def test_run_honours_worker_timeout_from_env(tmp_path):
    """WORKER_TIMEOUT applies as in the API: a sleeping snippet is killed, reported as `error: timeout`."""
    path = snippet(tmp_path, "slow.py", 'import time\nprint("started", flush=True)\ntime.sleep(30)\n')
    started = time.monotonic()
    code, body, _ = dify_sandbox(tmp_path, "run", str(path), WORKER_TIMEOUT="1")
    assert time.monotonic() - started < 15
    data = body["data"]
    assert data["exit_code"] == -1
    assert "error: timeout" in data["error"]
    assert data["stdout"] == "started\n"
    assert code == 1


def test_run_reads_the_config_file(tmp_path):
    """Settings come from conf/config.yaml in the cwd, as for `serve`: enable_network false removes the proxies."""
    online, offline = tmp_path / "online", tmp_path / "offline"
    online.mkdir()
    (offline / "conf").mkdir(parents=True)
    (offline / "conf" / "config.yaml").write_text("enable_network: false\n")
    path = snippet(tmp_path, "env.py", 'import os\nprint(os.environ.get("HTTP_PROXY", "none"))\n')
    _, with_proxy, _ = dify_sandbox(online, "run", str(path), HTTP_PROXY="http://proxy.invalid:3128")
    _, without, _ = dify_sandbox(offline, "run", str(path), HTTP_PROXY="http://proxy.invalid:3128")
    assert with_proxy["data"]["stdout"] == "http://proxy.invalid:3128\n"
    assert without["data"]["stdout"] == "none\n"


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [("missing.py", None, "cannot read"), ("empty.py", "", "empty")],
)
def test_run_unusable_file_is_a_request_error(tmp_path, name, content, expected):
    """A missing or empty file gives the API's error envelope (code -400, data null) and exit 1."""
    if content is not None:
        snippet(tmp_path, name, content)
    code, body, _ = dify_sandbox(tmp_path, "run", str(tmp_path / name))
    assert body["code"] == -400
    assert body["data"] is None
    assert expected in body["message"]
    assert code == 1


def test_check_reports_passing_self_tests_and_isolation(tmp_path):
    """Scenario: `check` with the fork executor.

    1. Both self-tests pass; the command exits 0 unless a run could reach the service: as root with
       runs as root (this interpreter is not readable by per-run users), a run can read the
       service's environment block, which `check` must say (`ok: false`, exit 1).
    2. Versions, executors and limits reflect the settings (WORKER_TIMEOUT from env).
    3. Each run had its own session and process group, a scrubbed environment and its own dir.
    4. API_KEY is not in any run's environment, and no run can signal the service.
    """
    code, report, stderr = dify_sandbox(tmp_path, "check", WORKER_TIMEOUT="7", API_KEY="secret-check")
    as_root = [language for language in LANGUAGES if report["isolation"][language]["run_uid"] == 0]
    expected = [
        f"a {language} run can read the service's environment block (where API_KEY lives)" for language in as_root
    ]
    assert report["problems"] == expected, (report, stderr)
    assert report["ok"] is not as_root
    assert code == (1 if as_root else 0)
    assert report["self_tests"]["python3"]["passed"] is True
    assert report["self_tests"]["nodejs"]["passed"] is True
    assert report["versions"]["python"] == ".".join(str(part) for part in sys.version_info[:3])
    assert report["versions"]["node"]["version"].startswith("v")
    assert report["versions"]["node"]["source"] in {"PATH", "wheel", "NODEJS_PATH"}
    assert report["executor"] == {"python3": "fork", "nodejs": "node_pool"}
    assert report["limits"]["worker_timeout"] == 7.0
    assert report["limits"]["grace_seconds"] == 12.0
    assert {"output_limit_bytes", "max_workers", "max_requests"} <= set(report["limits"])
    for language in ("python3", "nodejs"):
        isolation = report["isolation"][language]
        assert isolation["own_process"] is True, isolation
        assert isolation["own_session"] is True, isolation
        assert isolation["own_process_group"] is True, isolation
        assert isolation["scrubbed_env"] is True, isolation
        assert isolation["per_run_dir"] is True, isolation
        assert "API_KEY" not in isolation["env_names"]
        assert isolation["rlimits"]["core"] == 0
        assert isolation["server_signalable"] is False, isolation
    assert "secret-check" not in json.dumps(report)
    assert isinstance(report["isolation"]["server_non_dumpable"], bool | None)


def test_check_with_thread_executor_reports_no_process_isolation(tmp_path):
    """With SANDBOX_EXECUTOR=thread the self-tests pass, but the report says python3 runs share the process (not ok)."""
    code, report, _ = dify_sandbox(tmp_path, "check", SANDBOX_EXECUTOR="thread")
    assert code == 1
    assert report["self_tests"]["python3"]["passed"] is True
    assert report["problems"][0] == (
        "python3 runs inside the server process (SANDBOX_EXECUTOR=thread): trusted code only"
    )
    assert report["executor"]["python3"] == "thread"
    isolation = report["isolation"]["python3"]
    assert isolation["own_process"] is False
    assert isolation["own_session"] is False
    assert isolation["per_run_dir"] is False


def test_check_fails_when_node_is_missing(tmp_path):
    """A NODEJS_PATH that does not exist fails the nodejs self-test (with the reason) and the command (exit 1)."""
    code, report, _ = dify_sandbox(tmp_path, "check", NODEJS_PATH=str(tmp_path / "no-node"))
    assert code == 1
    assert report["ok"] is False
    assert report["self_tests"]["python3"]["passed"] is True
    assert report["self_tests"]["nodejs"]["passed"] is False
    assert "Node.js is not available" in report["self_tests"]["nodejs"]["error"]
    assert report["versions"]["node"] is None


def _config_problems(report: dict[str, Any]) -> list[str]:
    return [problem for problem in report["problems"] if "config file" in problem]


def test_check_reports_a_readable_config_file_that_holds_the_key(tmp_path):
    """Scenario: `check` says when a run could read the API key from the config file.

    1. conf/config.yaml holds `app.key`; all runs share the service's uid (SANDBOX_RUN_UIDS empty).
    2. With SANDBOX_ISOLATION=off the probes can read the file: `ok: false`, one problem per language
       naming the file, and the command exits 1; the key itself is not in the report.
    3. With the default isolation the problem is reported exactly when Landlock's file layer is not in force.
    """
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text("app:\n  key: key-in-file-51c2\n")
    code, report, stderr = dify_sandbox(tmp_path, "check", SANDBOX_ISOLATION="off", SANDBOX_RUN_UIDS="")
    assert code == 1
    assert report["ok"] is False
    assert [report["isolation"][language]["config_file_readable"] for language in LANGUAGES] == [True, True]
    assert _config_problems(report) == [
        f"a {language} run can read the config file conf/config.yaml, which holds the API key "
        "(set API_KEY in the environment instead)"
        for language in LANGUAGES
    ], (report["problems"], stderr)
    assert "key-in-file-51c2" not in json.dumps(report)

    _, confined, _ = dify_sandbox(tmp_path, "check", SANDBOX_RUN_UIDS="")
    landlock_files = confined["isolation"]["layers"]["in_force"]["landlock_files"]["active"]
    assert bool(_config_problems(confined)) is not landlock_files, confined["problems"]


@pytest.mark.parametrize(
    ("content", "env"),
    [("max_requests: 900\n", {}), ("app:\n  key: stale-key\n", {"API_KEY": "key-in-env"})],
    ids=["no-key", "key-overridden-by-env"],
)
def test_check_without_the_key_in_the_file_reports_no_config_problem(tmp_path, content, env):
    """A readable config file without the key in force (none, or one API_KEY overrides) is not reported."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text(content)
    _, report, _ = dify_sandbox(tmp_path, "check", SANDBOX_ISOLATION="off", SANDBOX_RUN_UIDS="", **env)
    assert report["isolation"]["python3"]["config_file_readable"] is True
    assert _config_problems(report) == []


def test_check_with_an_empty_key(tmp_path):
    """An empty API_KEY fails `check` as it fails `serve` (exit 78); allowed, it is reported as a problem."""
    proc = subprocess.run(
        [sys.executable, "-m", "dify_sandbox", "check"],
        cwd=tmp_path,
        env={
            **{k: v for k, v in os.environ.items() if k not in SERVER_ENV_NAMES and not k.startswith("SANDBOX_")},
            "API_KEY": "",
        },
        capture_output=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 78
    assert "API_KEY" in proc.stderr.decode()
    code, report, _ = dify_sandbox(tmp_path, "check", API_KEY="", SANDBOX_ALLOW_NO_KEY="true")
    assert code == 1
    assert report["problems"][0] == (
        "API_KEY is empty (SANDBOX_ALLOW_NO_KEY=true): anyone who reaches the port can run code"
    )

"""What a run returns: stdout/stderr/error/exit_code for normal, failing and crashing snippets, and isolation."""

from __future__ import annotations

import textwrap

import pytest

pytestmark = pytest.mark.integration


def first_line(text: str) -> str:
    return text.split("\n", 1)[0]


def assert_still_serving(server):
    assert server.run_ok('print("still serving")')["stdout"] == "still serving\n"


def test_uncaught_exception_is_exit_255_with_traceback(server):
    """An uncaught exception exits 255; stderr has the traceback and error = status line + stderr."""
    data = server.run_ok("x = 1\nprint('before')\n1 / 0\n")
    assert data["exit_code"] == 255
    assert data["stdout"] == "before\n"
    assert "Traceback (most recent call last)" in data["stderr"]
    assert "ZeroDivisionError: division by zero" in data["stderr"]
    assert first_line(data["error"]) == "process exited with code 255"
    assert data["stderr"] in data["error"]


@pytest.mark.parametrize(
    ("code", "exit_code", "status_line"),
    [
        pytest.param("import sys\nprint('out')\nsys.exit(3)", 3, "process exited with code 3", id="sys.exit(3)"),
        pytest.param("import os\nos._exit(1)", 1, "process exited with code 1", id="os._exit(1)"),
        pytest.param("import sys\nsys.exit(0)", 0, None, id="sys.exit(0)"),
        pytest.param("raise SystemExit(42)", 42, "process exited with code 42", id="SystemExit(42)"),
        pytest.param("import ctypes\nctypes.string_at(0)", -1, None, id="segfault"),
        pytest.param("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", -1, None, id="self-SIGKILL"),
    ],
)
def test_exit_status_is_reported_and_server_survives(server, code, exit_code, status_line):
    """The process status becomes exit_code (a signal is -1), error explains non-zero exits, the server lives on."""
    data = server.run_ok(code)
    assert data["exit_code"] == exit_code, data
    if exit_code == 0:
        assert data["error"] == "", data
    elif status_line is not None:
        assert first_line(data["error"]) == status_line, data
    else:
        assert data["error"].strip(), data
    if code.startswith("import sys\nprint"):
        assert data["stdout"] == "out\n"
    assert_still_serving(server)


def test_logging_goes_to_stderr_without_error(server):
    """logging output lands in stderr only; error stays empty and the run is a success."""
    data = server.run_ok('import logging\nlogging.basicConfig(level=logging.INFO)\nlogging.info("hi")')
    assert data == {"stdout": "", "stderr": "INFO:root:hi\n", "error": "", "exit_code": 0}


def test_warning_does_not_set_error(server):
    """A warning on stderr (dify#38492) leaves error empty so Dify does not fail the node."""
    data = server.run_ok('import warnings\nwarnings.warn("careful")\nprint("ok")')
    assert data["stdout"] == "ok\n"
    assert "UserWarning: careful" in data["stderr"]
    assert data["error"] == ""
    assert data["exit_code"] == 0


@pytest.mark.parametrize(
    ("code", "stdout"),
    [
        pytest.param(
            "import base64\n"
            'encoded = base64.b64encode("hello, 世界".encode()).decode()\n'
            "print(encoded)\n"
            "print(base64.b64decode(encoded).decode())",
            "aGVsbG8sIOS4lueVjA==\nhello, 世界\n",
            id="base64",
        ),
        pytest.param('import json\nprint(json.dumps({"Hello": "World"}))', '{"Hello": "World"}\n', id="json"),
        pytest.param(
            "import datetime, zoneinfo\n"
            'tz = zoneinfo.ZoneInfo("Asia/Shanghai")\n'
            "print(datetime.datetime(2024, 1, 1, 12, tzinfo=tz).isoformat())\n"
            'print("+08:00" in datetime.datetime.now(tz).isoformat())',
            "2024-01-01T12:00:00+08:00\nTrue\n",
            id="zoneinfo",
        ),
        pytest.param('print("你好, мир 🌍 é")', "你好, мир 🌍 é\n", id="utf8-stdout"),
        pytest.param("print(__name__)", "__main__\n", id="name-is-main"),
        pytest.param("import sys\nprint(repr(sys.stdin.read()))", "''\n", id="stdin-empty"),
        pytest.param(
            "import os\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            '    print("child", flush=True)\n'
            "    os._exit(0)\n"
            "_, status = os.waitpid(pid, 0)\n"
            'print("parent", os.waitstatus_to_exitcode(status))',
            "child\nparent 0\n",
            id="fork",
        ),
        pytest.param(
            "import subprocess\n"
            'r = subprocess.run(["echo", "hi"], capture_output=True)\n'
            'print(r.returncode, r.stdout.decode(), end="")',
            "0 hi\n",
            id="subprocess",
        ),
    ],
)
def test_official_snippets(server, code, stdout):
    """Cases from the official and Dify test suites produce exactly the expected stdout and no error."""
    data = server.run_ok(code)
    assert data == {"stdout": stdout, "stderr": "", "error": "", "exit_code": 0}


def test_long_output_is_returned_whole(server):
    """The upstream long-output case: print("a"*304486) returns exactly 304 487 bytes of stdout."""
    data = server.run_ok('print("a" * 304486)')
    assert len(data["stdout"]) == 304487
    assert data["stdout"] == "a" * 304486 + "\n"
    assert data["exit_code"] == 0


def test_large_stdout_and_stderr_together(server):
    """Interleaved large writes to both pipes neither deadlock nor lose bytes."""
    code = textwrap.dedent(
        """
        import sys
        for i in range(200):
            sys.stdout.write("o" * 5000 + "\\n")
            sys.stderr.write("e" * 5000 + "\\n")
        """
    )
    data = server.run_ok(code)
    assert data["stdout"] == ("o" * 5000 + "\n") * 200
    assert data["stderr"] == ("e" * 5000 + "\n") * 200
    assert data["exit_code"] == 0


def test_large_code_body(server):
    """Code of 2 MB (inputs ride inside the code as base64) runs; it is never limited like argv."""
    code = 'x = "' + "a" * 2_000_000 + '"\nprint(len(x))'
    data = server.run_ok(code)
    assert data["stdout"] == "2000000\n"


@pytest.mark.parametrize(
    ("setter", "checker"),
    [
        pytest.param("import json\njson.LEAK = 1", 'import json\nprint(hasattr(json, "LEAK"))', id="module-attr"),
        pytest.param("leak = 1", 'print("leak" in globals())', id="globals"),
        pytest.param(
            "import builtins\nbuiltins.LEAK = 1", 'import builtins\nprint(hasattr(builtins, "LEAK"))', id="builtins"
        ),
        pytest.param(
            'import sys, types\nsys.modules["leaky_module"] = types.ModuleType("leaky_module")',
            'import sys\nprint("leaky_module" in sys.modules)',
            id="sys.modules",
        ),
        pytest.param(
            'import os\nos.environ["LEAKY_ENV"] = "1"', 'import os\nprint("LEAKY_ENV" in os.environ)', id="environ"
        ),
    ],
)
def test_state_does_not_leak_between_runs(server, setter, checker):
    """Scenario: each run gets a fresh interpreter state.

    1. Run a snippet that changes module, global or process state (three times, so several pooled
       processes or threads would be touched if there were any).
    2. Run a snippet that looks for the change: it must print False.
    """
    for _ in range(3):
        assert server.run_ok(setter)["exit_code"] == 0
    assert server.run_ok(checker)["stdout"] == "False\n"


def test_preload_is_ignored_by_default(server):
    """With the default ENABLE_PRELOAD=false a preload is dropped: its names do not exist in the run."""
    data = server.run_ok("print(x + 1)", preload="x = 41")
    assert data["exit_code"] == 255
    assert "NameError" in data["stderr"]
    assert data["stdout"] == ""

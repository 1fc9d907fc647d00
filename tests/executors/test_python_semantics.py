"""Python snippets through the executors: the official result semantics and the official test cases."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import psutil
import pytest

from dify_sandbox.executors.base import RunResult
from dify_sandbox.executors.outcome import Cause

from .conftest import Harness

Run = Callable[..., RunResult]


def test_hello_world(run: Run) -> None:
    """print gives exactly its line on stdout and an empty error."""
    result = run('print("Hello World")')
    assert (result.stdout, result.stderr, result.error, result.exit_code) == ("Hello World\n", "", "", 0)


def test_uncaught_exception_exits_255_with_traceback(run: Run) -> None:
    """The traceback goes to stderr and into error, with the user's source line."""
    result = run("x = 1\n1 / 0\n")
    assert result.exit_code == 255
    assert "ZeroDivisionError: division by zero" in result.stderr
    assert "1 / 0" in result.stderr
    assert "dify_sandbox" not in result.stderr
    assert result.error == "process exited with code 255\n" + result.stderr


@pytest.mark.parametrize(
    ("code", "exit_code"),
    [
        ("import sys; sys.exit(3)", 3),
        ("import sys; sys.exit()", 0),
        ("exit(4)", 4),
        ("quit(5)", 5),
        ("raise SystemExit('bye')", 1),
    ],
)
def test_exit_codes(run: Run, code: str, exit_code: int) -> None:
    """SystemExit, exit() and quit() end the run (never the server) with their status."""
    result = run(code)
    assert result.exit_code == exit_code
    assert (result.error == "") == (exit_code == 0)
    assert run("print('still here')").stdout == "still here\n"


def test_os_exit_code(run: Run, needs_own_process: None) -> None:
    """os._exit ends only the run's process, with its status."""
    assert run("import os; os._exit(1)").exit_code == 1


def test_segfault_is_reported_and_harmless(run: Run, needs_own_process: None) -> None:
    """A segfault kills only the child: exit -1, the signal named, the next run fine."""
    result = run("import ctypes; ctypes.string_at(0)")
    assert result.exit_code == -1
    assert "SIGSEGV" in result.error
    assert run("print(1)").stdout == "1\n"


def test_logging_goes_to_stderr_without_error(run: Run) -> None:
    """logging output lands on stderr while error stays empty."""
    result = run('import logging\nlogging.basicConfig(level=logging.INFO)\nlogging.info("hi there")')
    assert "hi there" in result.stderr
    assert (result.error, result.exit_code) == ("", 0)


def test_official_cases(run: Run) -> None:
    """base64, json and zoneinfo behave as in the official integration tests."""
    assert run('import base64; print(base64.b64decode(base64.b64encode(b"hello")).decode())').stdout == "hello\n"
    assert run('import json; print(json.dumps({"Hello": "World"}))').stdout == '{"Hello": "World"}\n'
    code = (
        "from datetime import datetime\nfrom zoneinfo import ZoneInfo\n"
        "print(datetime(2024, 1, 1, tzinfo=ZoneInfo('Asia/Shanghai')).isoformat())"
    )
    assert run(code).stdout == "2024-01-01T00:00:00+08:00\n"


def test_long_output_is_exact(run: Run) -> None:
    """The official 304,487-byte output comes back byte for byte."""
    assert run('print("a" * 304486)').stdout == "a" * 304486 + "\n"


def test_fork_and_subprocess_in_user_code(run: Run, needs_isolation: None) -> None:
    """os.fork and subprocess work inside a snippet."""
    forked = run(
        "import os, sys\npid = os.fork()\nif pid == 0:\n    print('child', flush=True)\n    os._exit(0)\n"
        "os.waitpid(pid, 0)\nprint('parent')"
    )
    assert sorted(forked.stdout.split()) == ["child", "parent"]
    spawned = run('import subprocess\nprint(subprocess.run(["echo", "hi"], capture_output=True, text=True).stdout)')
    assert spawned.stdout == "hi\n\n"


def test_name_is_main_and_globals_are_fresh(run: Run) -> None:
    """Each run gets a fresh __main__ namespace."""
    assert run("print(__name__)").stdout == "__main__\n"
    run("leak = 1")
    assert run("print('leak' in globals())").stdout == "False\n"


def test_module_state_does_not_leak(run: Run, needs_isolation: None) -> None:
    """A module changed by one run is pristine in the next."""
    run("import json\njson.LEAK = 1")
    assert run("import json\nprint(hasattr(json, 'LEAK'))").stdout == "False\n"


def test_environment_is_scrubbed(run: Run, needs_isolation: None) -> None:
    """The run sees only LANG, PATH, HOME, TMPDIR, the cache dirs (and proxies): never the server's variables."""
    result = run("import os\nprint(sorted(os.environ))\nprint(open('/proc/self/environ').read())")
    names, raw_environ = result.stdout.split("\n", 1)
    assert names == "['HOME', 'LANG', 'MPLCONFIGDIR', 'PATH', 'TMPDIR', 'XDG_CACHE_HOME']"
    assert "PYTEST" not in raw_environ


def test_working_dir_is_private_and_removed(run: Run, needs_isolation: None) -> None:
    """cwd, HOME and TMPDIR are one fresh dir per run, gone after the run."""
    result = run("import os, tempfile\nopen('f.txt', 'w').write('x')\nprint(os.getcwd())\nprint(tempfile.gettempdir())")
    cwd, tmp = result.stdout.split()
    assert cwd == tmp
    deadline = time.monotonic() + 2
    while os.path.exists(cwd) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not os.path.exists(cwd)
    assert run("import os\nprint(os.getcwd())").stdout.strip() != cwd


def test_runs_do_not_share_a_random_sequence(run: Run) -> None:
    """Each run's random module is seeded afresh: two runs draw different numbers."""
    code = "import random\nprint(random.getrandbits(64))"
    assert run(code).stdout != run(code).stdout


def test_threading_works_in_a_run(run: Run) -> None:
    """A run can start, name and join threads."""
    code = (
        "import threading\nout = []\n"
        "t = threading.Thread(target=lambda: out.append(threading.current_thread().name), name='worker')\n"
        "t.start(); t.join()\nprint(out, t.is_alive())"
    )
    assert run(code).stdout == "['worker'] False\n"


def test_standard_streams_are_pipes_and_empty_stdin(run: Run) -> None:
    """stdout and stderr cannot seek (they are pipes, as for a script piped to a reader); stdin is empty."""
    result = run("import sys\nprint(sys.stdout.seekable(), sys.stderr.seekable(), repr(sys.stdin.read()))")
    assert result.stdout == "False False ''\n"


def test_utf8_output_regardless_of_locale(run: Run) -> None:
    """CJK and emoji print raw; a lone surrogate is escaped instead of failing."""
    assert run("print('你好 🌍')").stdout == "你好 🌍\n"
    result = run("print('a\\ud800b')")
    assert result.exit_code == 0
    assert result.stdout == "a\\ud800b\n"


def test_binary_garbage_on_stdout_is_replaced(run: Run, needs_isolation: None) -> None:
    """Invalid UTF-8 written to fd 1 becomes U+FFFD rather than an error."""
    assert run("import os\nos.write(1, b'ok\\xff\\xfe\\n')").stdout == "ok\ufffd\ufffd\n"


BINARY_STREAMS = """\
import sys
sys.stdout.buffer.write("grüße ".encode())
cjk = "中".encode()
sys.stdout.buffer.write(cjk[:2])
sys.stdout.buffer.write(cjk[2:] + b"\\xff")
sys.stdout.buffer.flush()
sys.stderr.buffer.write(b"to stderr\\n")
print(" then text")
"""


def test_binary_stream_writes_are_the_runs_output(run: Run) -> None:
    """Bytes written to sys.stdout.buffer and sys.stderr.buffer are the run's output; split UTF-8 is joined."""
    result = run(BINARY_STREAMS)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "grüße 中\ufffd then text\n"
    assert result.stderr == "to stderr\n"


def test_stdin_is_empty(run: Run) -> None:
    """Reading stdin gives EOF at once."""
    assert run("import sys\nprint(repr(sys.stdin.read()))").stdout == "''\n"


def test_preload_runs_first_when_enabled(harness: Harness) -> None:
    """The preload runs before the code, in the same module, only when ENABLE_PRELOAD is on."""
    assert not harness.settings.enable_preload
    ignored = harness.run("print(x + 1)", preload="x = 41")
    assert ignored.exit_code == 255
    assert "NameError: name 'x' is not defined" in ignored.stderr
    enabled = Harness(harness.settings.executor, enable_preload=True)
    try:
        result = enabled.run("print(x + 1)", preload="x = 41\nprint('preload first')")
    finally:
        enabled.close()
    assert (result.stdout, result.error, result.exit_code) == ("preload first\n42\n", "", 0)


def test_non_daemon_threads_finish_before_exit(run: Run, needs_isolation: None) -> None:
    """Like a script, the run waits for its non-daemon threads."""
    code = (
        "import threading, time\ndef work():\n    time.sleep(0.2)\n    print('late')\n"
        "threading.Thread(target=work).start()"
    )
    assert run(code).stdout == "late\n"


def test_timeout_kills_and_keeps_output(run: Run) -> None:
    """At the limit the run is killed: exit -1, error: timeout, earlier output kept."""
    started = time.monotonic()
    result = run("import time\nprint('before', flush=True)\nfor _ in range(300):\n    time.sleep(0.1)", timeout=1)
    assert time.monotonic() - started < 3
    assert result.outcome.cause is Cause.TIMEOUT
    assert result.exit_code == -1
    assert "error: timeout" in result.error
    assert result.stdout == "before\n"


def test_timeout_leaves_no_grandchild(run: Run, needs_isolation: None) -> None:
    """A sleeping grandchild in the run's group dies with it."""
    code = "import subprocess, time\nsubprocess.Popen(['sleep', '97.125'])\nfor _ in range(300):\n    time.sleep(0.1)"
    assert run(code, timeout=1).outcome.cause is Cause.TIMEOUT
    assert not _processes_with_arg("97.125")


def test_background_child_dies_when_the_run_ends(run: Run, needs_isolation: None) -> None:
    """A child left running when the snippet returns is killed with the run's group."""
    result = run("import subprocess\nsubprocess.Popen(['sleep', '98.25'])\nprint('done')")
    assert result.stdout == "done\n"
    assert not _processes_with_arg("98.25")


def test_output_limit_kills_the_run(run: Run) -> None:
    """Past the output cap the run is killed and the error says so."""
    result = run("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)")
    assert result.outcome.cause is Cause.OUTPUT_LIMIT
    assert result.exit_code == -1
    assert "output limit exceeded" in result.error
    assert len(result.stdout) == 1 << 20


def test_concurrent_runs_keep_their_own_output(harness: Harness) -> None:
    """Fifty concurrent runs each get exactly their own output."""
    results = harness.gather([f"for _ in range(1000):\n    print('m{i}')" for i in range(50)])
    for i, result in enumerate(results):
        assert result.stdout == f"m{i}\n" * 1000


def _processes_with_arg(arg: str) -> list[int]:
    deadline = time.monotonic() + 2
    while True:
        found = []
        for proc in psutil.process_iter(["cmdline", "status"]):
            if arg in (proc.info["cmdline"] or []) and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)

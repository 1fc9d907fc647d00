"""Faults under load: hostile or broken snippets, each run while a background load keeps the server busy.

One server for the module (`WORKER_TIMEOUT=3`, 8 MiB output cap, 512 MiB memory, 64 MiB files) and four client
threads that send normal python3 (and, on one client, nodejs) runs in a loop, each printing a marker of its own.
After every case the `rig` fixture checks, at teardown, that the server process is alive and `/health` answers 200,
that every client has completed a run started after the case, that every background response so far was HTTP 200,
code 0 and exactly its own marker on stdout and stderr (only python runs overlapping a deliberate zygote kill may
answer code -500), and that exactly one zygote is running. The case itself checks how the fault was reported:
`exit_code`, and `error` = the status line, the sandbox's reason line and all of stderr, byte for byte.
"""

from __future__ import annotations

import signal
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psutil
import pytest

from dify_sandbox.confinement import landlock
from tests.integration.conftest import Server, attach, processes_with_cmdline

from .conftest import BackgroundLoad, alive, gone, wait_for

pytestmark = pytest.mark.integration

WORKER_TIMEOUT = 3.0
OUTPUT_LIMIT = 8 * 1024 * 1024
SERVER_ENV = {
    "WORKER_TIMEOUT": int(WORKER_TIMEOUT),
    "SANDBOX_OUTPUT_LIMIT_BYTES": OUTPUT_LIMIT,
    "SANDBOX_MEMORY_LIMIT_MB": 512,
    "SANDBOX_MAX_FILE_SIZE_MB": 64,
}
# A run the sandbox stops at the wall-clock limit answers a little after it (kill, reap, last reads); on a loaded
# 2-core CI machine under coverage that can take a while, so the bound is generous.
TIMEOUT_SLACK = 4.0
QUICK = 10.0  # bound for a case that does not wait for the timeout


@dataclass
class Rig:
    """The module's server, its background load, and a client of its own for the fault runs."""

    server: Server
    load: BackgroundLoad
    http: httpx.Client

    def run(self, code: str, *, language: str = "python3", timeout: float = 30.0) -> tuple[dict[str, Any], float]:
        """Runs one fault; returns the response body (HTTP 200 asserted) and the seconds it took."""
        body = {"language": language, "code": code, "preload": "", "enable_network": True}
        started = time.monotonic()
        resp = self.http.post("/v1/sandbox/run", json=body, timeout=timeout)
        seconds = time.monotonic() - started
        assert resp.status_code == 200, f"HTTP {resp.status_code}: {resp.text[:500]}"
        return resp.json(), seconds

    def run_data(self, code: str, **kwargs: Any) -> tuple[dict[str, Any], float]:
        """Runs one fault that must come back as a run result (code 0); returns `data` and the seconds."""
        body, seconds = self.run(code, **kwargs)
        assert body["code"] == 0, body
        assert body["message"] == "success", body
        assert set(body["data"]) == {"stdout", "stderr", "error", "exit_code"}, body
        return body["data"], seconds

    def zygote(self) -> psutil.Process:
        zygotes = wait_for(self.server.zygotes, 10)
        assert zygotes, "no zygote"
        assert len(zygotes) == 1, f"expected one zygote: {zygotes}"
        return zygotes[0]

    def assert_unharmed(self) -> None:
        """The server lives, every load client made progress since now, no load response was wrong, one zygote."""
        since = time.monotonic()
        server = self.server
        assert server.proc.poll() is None, f"the server exited\n{server.output()}"
        assert server.health_status(timeout=5) == 200, "GET /health did not answer 200"
        progressed = self.load.wait_for_every_client(since)
        problems = self.load.problems(self.load.take())
        assert not problems, f"{len(problems)} background run(s) went wrong:\n" + "\n".join(problems[:20])
        assert progressed, "a background client made no progress within 20 s"
        assert wait_for(lambda: len(server.zygotes()) == 1, 10), f"zygotes: {server.zygotes()}"


@pytest.fixture(scope="module")
def _rig(long_lived_server: Callable[..., Server]) -> Iterator[Rig]:
    server = long_lived_server("faults", **SERVER_ENV)
    assert server.run_ok("print('warm')")["stdout"] == "warm\n"
    load = BackgroundLoad(server, clients=4)
    load.start()
    rig = Rig(server, load, server.client(server.api_key))
    yield rig
    load.stop()
    problems = load.problems(load.take())
    assert not problems, "background runs went wrong at the end of the module:\n" + "\n".join(problems[:20])
    assert load.total > 0


@pytest.fixture
def rig(request: pytest.FixtureRequest, _rig: Rig) -> Iterator[Rig]:
    """The module's rig; after the case, checks that the server and the background load are unharmed."""
    attach(request.node, _rig.server)
    if _rig.server.proc.poll() is not None:
        pytest.fail(f"the faults server has exited\n{_rig.server.output()}")
    yield _rig
    _rig.assert_unharmed()


def assert_reported(data: dict[str, Any], exit_code: int, reason: str = "") -> None:
    """`exit_code` as given; `error` empty on a clean exit, else status line, reason line, then all of stderr."""
    assert data["exit_code"] == exit_code, data
    if exit_code == 0 and not reason:
        assert data["error"] == "", data
        return
    head = f"process exited with code {exit_code}\n" + (f"{reason}\n" if reason else "")
    assert data["error"] == head + data["stderr"], data["error"][:2000]


# --- simple faults: one snippet, one expected report -----------------------------------------------------------------

TIMEOUT = "error: timeout"
OUTPUT = "error: output limit exceeded"
MEMORY = "error: memory limit exceeded"


@dataclass(frozen=True)
class Fault:
    code: str
    exit_code: int
    reason: str = ""
    stdout: str | Callable[[str], bool] | None = None  # exact text, or a predicate
    stderr_has: str | Callable[[str], bool] | None = None  # substring, or a predicate
    language: str = "python3"

    @property
    def times_out(self) -> bool:
        return self.reason == TIMEOUT


def _capped(char: str) -> Callable[[str], bool]:
    return lambda text: len(text) == OUTPUT_LIMIT and set(text) == {char}


def _lines_capped(text: str) -> bool:
    return len(text) == OUTPUT_LIMIT and text.startswith("line\nline\n") and set(text) <= set("line\n")


_GARBAGE = b"\xff\xfe" + bytes(range(256))

FAULTS = [
    # CPU and time
    pytest.param(Fault("while True:\n    pass", -1, TIMEOUT, stdout=""), id="busy-loop", marks=pytest.mark.slow),
    pytest.param(
        Fault("import time\nprint('sleeping', flush=True)\ntime.sleep(10**6)", -1, TIMEOUT, stdout="sleeping\n"),
        id="sleep-forever",
        marks=pytest.mark.slow,
    ),
    pytest.param(
        Fault(
            "import os, signal\nprint('stopping', flush=True)\nos.kill(os.getpid(), signal.SIGSTOP)",
            -1,
            TIMEOUT,
            stdout="stopping\n",
        ),
        id="SIGSTOP-to-itself",
        marks=pytest.mark.slow,
    ),
    pytest.param(
        Fault(
            "import threading, time\nthreading.Thread(target=time.sleep, args=(10**6,)).start()\n"
            "print('main done', flush=True)",
            -1,
            TIMEOUT,
            stdout="main done\n",
        ),
        id="thread-that-never-ends",
        marks=pytest.mark.slow,
    ),
    pytest.param(
        Fault(
            "import threading, time\n"
            "threading.Thread(target=time.sleep, args=(10**6,), daemon=True).start()\nprint('main done')",
            0,
            stdout="main done\n",
        ),
        id="daemon-thread-that-never-ends",
    ),
    pytest.param(
        Fault(
            "import threading, time\nthreads = [threading.Thread(target=time.sleep, args=(1,)) for _ in range(50)]\n"
            "for t in threads:\n    t.start()\nfor t in threads:\n    t.join()\nprint(len(threads))",
            0,
            stdout="50\n",
        ),
        id="sleep-in-50-threads",
    ),
    # memory, files
    pytest.param(
        Fault("x = bytearray(1024 * 1024 * 1024)", 255, MEMORY, stdout="", stderr_has="MemoryError"),
        id="memory-hog-1GiB-at-once",
    ),
    pytest.param(
        Fault(
            "chunks = []\nwhile True:\n    chunks.append(bytearray(10 * 1024 * 1024))",
            255,
            MEMORY,
            stderr_has="MemoryError",
        ),
        id="memory-hog-growing",
    ),
    pytest.param(
        Fault(
            "chunk = b'x' * (1024 * 1024)\nwith open('big', 'wb') as f:\n    for _ in range(2048):\n"
            "        f.write(chunk)",
            255,
            "error: file size limit exceeded",
            stderr_has="OSError: [Errno 27] File too large",
        ),
        id="write-2GB-file",
    ),
    pytest.param(
        Fault(
            "files = [open('f', 'a') for _ in range(100000)]",
            255,
            "error: open files limit exceeded",
            stderr_has="Too many open files",
        ),
        id="open-100000-file-handles",
    ),
    # output
    pytest.param(
        Fault(
            "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(100):\n    sys.stdout.write(chunk)",
            -1,
            OUTPUT,
            stdout=_capped("x"),
        ),
        id="100MB-stdout",
        marks=pytest.mark.slow,
    ),
    pytest.param(
        Fault(
            "import sys\nchunk = 'e' * (1 << 20)\nfor _ in range(100):\n    sys.stderr.write(chunk)",
            -1,
            OUTPUT,
            stdout="",
            stderr_has=_capped("e"),
        ),
        id="100MB-stderr",
        marks=pytest.mark.slow,
    ),
    pytest.param(
        Fault(
            "def lines():\n    while True:\n        yield 'line'\nfor line in lines():\n    print(line)",
            -1,
            OUTPUT,
            stdout=_lines_capped,
        ),
        id="infinite-generator-printing",
    ),
    pytest.param(
        Fault(
            "import sys\nfor i in range(100000):\n    sys.stdout.write(str(i % 10))\n    sys.stdout.flush()",
            0,
            stdout="0123456789" * 10000,
        ),
        id="100000-tiny-writes",
    ),
    pytest.param(
        Fault(
            f"import sys\nprint('a\\ud800b')\nsys.stdout.flush()\nsys.stdout.buffer.write({_GARBAGE!r})",
            0,
            stdout=(b"a\\ud800b\n" + _GARBAGE).decode("utf-8", "replace"),
        ),
        id="lone-surrogate-and-binary-garbage",
    ),
    pytest.param(
        Fault("import os\nprint('before', flush=True)\nos.close(1)\nprint('after')", 0, stdout="before\n"),
        id="stdout-fd-closed",
    ),
    pytest.param(
        Fault(
            "import sys\nsys.stdout.close()\nprint('after')",
            255,
            stdout="",
            stderr_has="ValueError: I/O operation on closed file.",
        ),
        id="sys.stdout-closed",
    ),
    # stdin
    pytest.param(Fault("input()", 255, stderr_has="EOFError: EOF when reading a line"), id="input()"),
    pytest.param(Fault("import sys\nprint(repr(sys.stdin.read()))", 0, stdout="''\n"), id="read-all-of-stdin"),
    # ways to end
    pytest.param(
        Fault(
            "import os, signal\nprint('before', flush=True)\nos.killpg(0, signal.SIGTERM)",
            -1,
            "error: killed by signal SIGTERM",
            stdout="before\n",
        ),
        id="killpg(0,SIGTERM)",
    ),
    pytest.param(Fault("print('bye', flush=True)\nimport os\nos._exit(3)", 3, stdout="bye\n"), id="os._exit(3)"),
    pytest.param(
        Fault("import ctypes\nctypes.string_at(0)", -1, "error: killed by signal SIGSEGV", stdout=""), id="segfault"
    ),
    pytest.param(Fault("import sys\nsys.exit('text')", 1, stdout="", stderr_has="text\n"), id="sys.exit('text')"),
    pytest.param(
        Fault("def f(n):\n    return f(n + 1)\nf(0)", 255, stderr_has="RecursionError: maximum recursion depth"),
        id="deep-recursion",
    ),
    pytest.param(
        Fault(
            "import resource, sys\nhard = resource.getrlimit(resource.RLIMIT_STACK)[1]\n"
            "resource.setrlimit(resource.RLIMIT_STACK, (8 << 20, hard))\nsys.setrecursionlimit(10**6)\n"
            "x = []\nfor _ in range(300000):\n    x = [x]\nprint(repr(x))",
            -1,
            "error: killed by signal SIGSEGV",
            stdout="",
        ),
        id="C-stack-overflow",
    ),
    pytest.param(
        Fault("import os\nos.setsid()", 255, stderr_has="PermissionError"),
        id="setsid-in-the-run-leader",
    ),
    pytest.param(
        Fault(
            "import os, time\nos.close(3)\nprint('closed', flush=True)\ntime.sleep(10**6)",
            -1,
            TIMEOUT,
            stdout="closed\n",
        ),
        id="close-status-fd-then-hang",
        marks=pytest.mark.slow,
    ),
    # nodejs
    pytest.param(Fault("while (true) {}", -1, TIMEOUT, language="nodejs"), id="node-busy-loop", marks=pytest.mark.slow),
    pytest.param(
        Fault(
            "const a = [];\nwhile (true) a.push(new Array(1e6).fill(1.5));",
            -1,
            "error: killed by signal SIGABRT",
            stderr_has="heap out of memory",
            language="nodejs",
        ),
        id="node-memory-hog",
    ),
    pytest.param(
        Fault(
            "const s = 'x'.repeat(1 << 20);\nfor (let i = 0; i < 100; i++) process.stdout.write(s);",
            -1,
            OUTPUT,
            stdout=_capped("x"),
            language="nodejs",
        ),
        id="node-100MB-stdout",
        marks=pytest.mark.slow,
    ),
    pytest.param(
        Fault(
            "console.log('before');\nprocess.kill(process.pid, 'SIGSEGV');",
            -1,
            "error: killed by signal SIGSEGV",
            stdout="before\n",
            language="nodejs",
        ),
        id="node-SIGSEGV-to-itself",
    ),
    pytest.param(
        Fault("Promise.reject(new Error('nope'));", 1, stdout="", stderr_has="Error: nope", language="nodejs"),
        id="node-unhandled-rejection",
    ),
    pytest.param(
        Fault("console.log('bye');\nprocess.exit(7);", 7, stdout="bye\n", language="nodejs"), id="node-process.exit(7)"
    ),
]


@pytest.mark.parametrize("fault", FAULTS)
def test_fault_is_reported_and_contained(rig: Rig, fault: Fault) -> None:
    """The fault comes back as a run result with the right exit code and reason, within its time bound."""
    data, seconds = rig.run_data(fault.code, language=fault.language)
    assert_reported(data, fault.exit_code, fault.reason)
    if callable(fault.stdout):
        assert fault.stdout(data["stdout"]), (len(data["stdout"]), data["stdout"][:200])
    elif fault.stdout is not None:
        assert data["stdout"] == fault.stdout
    if callable(fault.stderr_has):
        assert fault.stderr_has(data["stderr"]), (len(data["stderr"]), data["stderr"][:200])
    elif fault.stderr_has is not None:
        assert fault.stderr_has in data["stderr"], data["stderr"][-2000:]
    if fault.times_out:
        assert WORKER_TIMEOUT - 0.1 <= seconds <= WORKER_TIMEOUT + TIMEOUT_SLACK, seconds
    else:
        assert seconds < QUICK, seconds


# --- processes a run leaves behind ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_fork_bomb_is_killed_at_the_timeout(rig: Rig, sleep_marker: str) -> None:
    """Scenario: a fork bomb of 1024 processes (ten doublings, each then `exec sleep <marker>`).

    1. The run reaches the wall-clock limit: exit -1, `error: timeout`.
    2. Within 5 s of the answer no `sleep <marker>` is left.
    """
    code = f"import os\nfor _ in range(10):\n    os.fork()\nos.execvp('sleep', ['sleep', '{sleep_marker}'])"
    data, seconds = rig.run_data(code)
    assert_reported(data, -1, TIMEOUT)
    assert seconds <= WORKER_TIMEOUT + TIMEOUT_SLACK
    assert gone(["sleep", sleep_marker], 5.0), (
        f"{len(processes_with_cmdline(['sleep', sleep_marker]))} fork bomb processes survived"
    )


def test_double_forked_daemon_is_gone_after_the_run(rig: Rig, sleep_marker: str) -> None:
    """A daemon (fork, setsid, fork, exec) the run leaves behind is killed within 2 s of the answer."""
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        os.execvp('sleep', ['sleep', '{sleep_marker}'])\n"
        "    os._exit(0)\n"
        "time.sleep(0.3)\n"
        "print('parent done')"
    )
    data, _ = rig.run_data(code)
    assert_reported(data, 0)
    assert data["stdout"] == "parent done\n"
    assert gone(["sleep", sleep_marker], 2.0), "the daemon outlived its run"


def test_setsid_child_is_killed_when_the_run_ends(rig: Rig, sleep_marker: str) -> None:
    """A child that leaves the run's group with setsid is killed when its run ends normally."""
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        f"    os.execvp('sleep', ['sleep', '{sleep_marker}'])\n"
        "time.sleep(0.3)\n"
        "print('parent done')"
    )
    data, _ = rig.run_data(code)
    assert_reported(data, 0)
    assert gone(["sleep", sleep_marker], 2.0), "the setsid child outlived its run"


@pytest.mark.slow
def test_setsid_child_is_killed_at_the_timeout(rig: Rig, sleep_marker: str) -> None:
    """A run whose setsid child sleeps while the run itself hangs: both are gone after the timeout."""
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        f"    os.execvp('sleep', ['sleep', '{sleep_marker}'])\n"
        "time.sleep(10**6)"
    )
    data, _ = rig.run_data(code)
    assert_reported(data, -1, TIMEOUT)
    assert gone(["sleep", sleep_marker], 2.0), "the setsid child outlived its timed-out run"


def test_two_sessions_deep_child_is_killed_after_the_run(
    start_server: Callable[..., Server], sleep_marker: str
) -> None:
    """Scenario (its own idle server: another run ending later would sweep the orphan by chance):

    1. The run forks A; A calls setsid and forks B; B calls setsid too and execs `sleep <marker>`; A sleeps.
    2. The run prints and exits 0 at once.
    3. Within 2 s of the answer no `sleep <marker>` is left.
    """
    server = start_server(WORKER_TIMEOUT=3)
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        f"        os.execvp('sleep', ['sleep', '{sleep_marker}'])\n"
        "    time.sleep(10**6)\n"
        "time.sleep(0.3)\n"
        "print('parent done')"
    )
    data = server.run_ok(code)
    assert data["stdout"] == "parent done\n"
    assert gone(["sleep", sleep_marker], 2.0), "the second-session grandchild outlived its run"


def test_node_child_process_is_gone_after_the_run(rig: Rig, sleep_marker: str) -> None:
    """A nodejs run that spawns `sleep` (unref'd, in its group) and exits: the sleep is gone within 2 s."""
    code = (
        "const { spawn } = require('child_process');\n"
        f"spawn('sleep', ['{sleep_marker}'], {{ stdio: 'ignore' }}).unref();\n"
        "console.log('spawned');"
    )
    data, _ = rig.run_data(code, language="nodejs")
    assert_reported(data, 0)
    assert data["stdout"] == "spawned\n"
    assert gone(["sleep", sleep_marker], 2.0), "the node run's child outlived it"


def test_node_detached_child_is_gone_after_the_run(rig: Rig, sleep_marker: str) -> None:
    """A nodejs run that spawns a detached `sleep` and exits: the sleep is gone within 2 s."""
    code = (
        "const { spawn } = require('child_process');\n"
        f"spawn('sleep', ['{sleep_marker}'], {{ detached: true, stdio: 'ignore' }}).unref();\n"
        "console.log('spawned');"
    )
    data, _ = rig.run_data(code, language="nodejs")
    assert_reported(data, 0)
    assert gone(["sleep", sleep_marker], 2.0), "the detached child outlived its run"


# --- the status pipe (fd 3) ------------------------------------------------------------------------------------------


def test_closing_the_status_fd_keeps_a_clean_exit(rig: Rig) -> None:
    """A snippet that closes fd 3 (as os.closerange(3, ...) in daemon code does) and ends normally exits 0."""
    data, _ = rig.run_data("import os\nos.closerange(3, 1024)\nprint('done')")
    assert data["stdout"] == "done\n"
    assert_reported(data, 0)


def test_garbage_on_the_status_fd_gives_a_sane_result(rig: Rig) -> None:
    """Whatever a snippet writes to fd 3, exit_code stays a process status (-1..255) and no limit is invented."""
    code = f"import os\nos.write(3, {struct.pack('!ii', 2**31 - 1, 2)!r})\nprint('after')"
    data, _ = rig.run_data(code)
    assert data["stdout"] == "after\n"
    assert -1 <= data["exit_code"] <= 255, data
    assert "limit exceeded" not in data["error"], data


@pytest.mark.slow
def test_writing_to_the_status_fd_does_not_escape_the_timeout(rig: Rig) -> None:
    """A snippet that writes 8 bytes to fd 3 and then sleeps is still stopped at the wall-clock limit."""
    code = f"import os, time\nos.write(3, {bytes(8)!r})\nprint('written', flush=True)\ntime.sleep(6)"
    data, seconds = rig.run_data(code)
    assert_reported(data, -1, TIMEOUT)
    assert seconds <= WORKER_TIMEOUT + TIMEOUT_SLACK / 2


# --- the zygote dies ------------------------------------------------------------------------------------------------


def _recovered(rig: Rig, old_zygote: int) -> None:
    """A fresh run succeeds within 10 s, served by a zygote other than `old_zygote`."""

    def ok() -> bool:
        body, _ = rig.run("print('recovered')", timeout=15)
        return bool(body["code"] == 0 and body["data"]["stdout"] == "recovered\n")

    assert wait_for(ok, 10, interval=0.2), "no successful run within 10 s of the zygote's death"
    assert rig.zygote().pid != old_zygote


@pytest.mark.skipif(landlock.abi_version() < 6, reason="signal scoping needs Landlock ABI 6 (Linux 6.12+)")
def test_snippet_cannot_kill_its_zygote(rig: Rig) -> None:
    """Scenario: `os.kill(os.getppid(), 9)` aimed at the zygote that forked the run.

    1. The run answers normally: the kill is refused with EPERM (Landlock's signal scoping).
    2. The zygote keeps its pid and the next run succeeds on it.
    """
    old = rig.zygote().pid
    body, _ = rig.run("import os\ntry:\n    os.kill(os.getppid(), 9)\nexcept PermissionError as e:\n    print(e.errno)")
    assert body["code"] == 0, body
    assert body["data"]["stdout"] == "1\n", body
    assert rig.zygote().pid == old
    assert rig.run("print('ok')")[0]["data"]["stdout"] == "ok\n"


@pytest.mark.slow
def test_zygote_killed_from_outside_mid_run(rig: Rig, sleep_marker: str) -> None:
    """Scenario: SIGKILL the zygote while a run (with a child process) is in flight.

    1. The run starts `sleep <marker>`; wait until it exists.
    2. SIGKILL the zygote: the run answers code -500 naming the zygote.
    3. The run's `sleep <marker>` is gone within 2 s (the worker kills the groups of the zygote's runs).
    4. Within 10 s a run succeeds on a new zygote.
    """
    zygote = rig.zygote()
    with rig.load.zygote_may_die():
        in_flight = rig.server.submit_run(
            f"import subprocess\nsubprocess.run(['sleep', '{sleep_marker}'])\nprint('finished')", timeout=30
        )
        assert wait_for(lambda: processes_with_cmdline(["sleep", sleep_marker]), 5), "the run's sleep never started"
        zygote.send_signal(signal.SIGKILL)
        resp = in_flight.result(timeout=30)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["code"] == -500, body
        assert "zygote" in body["message"], body
        assert gone(["sleep", sleep_marker], 2.0), "the in-flight run's child outlived its dead zygote"
        _recovered(rig, zygote.pid)
    assert not alive(zygote)


# --- a CPU limit (its own server: the module's has none) --------------------------------------------------------------


@pytest.mark.slow
def test_cpu_limit_is_named_under_load(start_server: Callable[..., Server]) -> None:
    """With SANDBOX_CPU_LIMIT_SECONDS=1 a busy loop ends by SIGXCPU as 'cpu time limit exceeded', not a timeout,
    while two load clients keep getting their own output."""
    server = start_server(SANDBOX_CPU_LIMIT_SECONDS=1, WORKER_TIMEOUT=10)
    load = BackgroundLoad(server, clients=2, nodejs=False)
    load.start()
    try:
        started = time.monotonic()
        data = server.run_ok("while True:\n    pass", timeout=30)
        seconds = time.monotonic() - started
        assert load.wait_for_every_client(time.monotonic())
    finally:
        load.stop()
    assert_reported(data, -1, "error: cpu time limit exceeded")
    assert seconds < 8, seconds
    problems = load.problems(load.take())
    assert not problems, "\n".join(problems[:20])
    assert server.health_status() == 200

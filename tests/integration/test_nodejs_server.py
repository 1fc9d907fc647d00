"""`language: "nodejs"` through the real server: Dify's JavaScript node, concurrency, a missing node, shutdown.

The script is built the way Dify builds it (`api/core/helper/code_executor/javascript/javascript_transformer.py`)
and the response is read back the way Dify's `code_executor.py` reads it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from ..dify_scripts import JAVASCRIPT_DEFAULT_CODE, RESULT_TAG, dify_execute, extract_result, javascript_script
from ..polling import wait_for

pytestmark = pytest.mark.integration

BOOTSTRAP_MARKER = "node_bootstrap.js"


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


@pytest.mark.parametrize(
    ("code", "stdout"),
    [
        ('console.log("Hello World")', "Hello World\n"),
        ('console.log(JSON.stringify({"Hello": "World"}))', '{"Hello":"World"}\n'),
    ],
    ids=["hello", "json"],
)
def test_official_javascript_cases(server, code, stdout):
    """Dify's javascript executor tests: exact stdout, empty error."""
    assert dify_execute(server, code, language="nodejs") == stdout


def test_javascript_default_template(server):
    """Dify's default JavaScript node with arg1/arg2 returns {"result": "HelloWorld"}."""
    stdout = dify_execute(
        server, javascript_script(JAVASCRIPT_DEFAULT_CODE, {"arg1": "Hello", "arg2": "World"}), language="nodejs"
    )
    assert stdout == '<<RESULT>>{"result":"HelloWorld"}<<RESULT>>\n'
    assert json.loads(extract_result(stdout)) == {"result": "HelloWorld"}


def test_javascript_node_round_trips_cjk_and_emoji(server):
    """Non-ASCII inputs (CJK, emoji, quotes, newlines) survive base64 → JSON.parse → main → JSON.stringify."""
    code = textwrap.dedent(
        """
        function main({arg1, arg2}) {
            const reversed = Array.from(arg1).reverse().join('');
            return {echo: arg1, nested: arg2, codepoints: [...arg1].length, reversed: reversed}
        }
        """
    )
    arg1 = "你好，世界 🌏🎉 «ß» \"quoted\" 'single' \\ back\nnew line"  # noqa: RUF001 - CJK punctuation on purpose
    arg2 = {"键": ["值", 1, 2.5, None, True], "emoji": "👩‍💻"}
    stdout = dify_execute(server, javascript_script(code, {"arg1": arg1, "arg2": arg2}), language="nodejs")
    expected = {"echo": arg1, "nested": arg2, "codepoints": len(arg1), "reversed": arg1[::-1]}
    as_js = json.dumps(expected, ensure_ascii=False, separators=(",", ":"))  # what JSON.stringify writes
    assert stdout == f"{RESULT_TAG}{as_js}{RESULT_TAG}\n"
    assert json.loads(extract_result(stdout)) == expected


def test_twenty_concurrent_nodejs_runs(server):
    """Twenty nodejs runs in flight at once, each on its own connection, each get exactly their own output."""
    code = "setTimeout(() => {{ console.log(JSON.stringify({{run: {n}, square: {n} * {n}}})); }}, 200);"

    def one(n: int) -> httpx.Response:
        return server.run(code.format(n=n), language="nodejs", client=server.client(server.api_key))

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(one, range(20)))
    for n, resp in enumerate(responses):
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["code"] == 0, body
        assert body["data"]["stdout"] == json.dumps({"run": n, "square": n * n}, separators=(",", ":")) + "\n"
        assert (body["data"]["error"], body["data"]["exit_code"]) == ("", 0)


def test_broken_nodejs_path_fails_only_nodejs(start_server):
    """With NODEJS_PATH=/nonexistent/node the server starts; nodejs runs give -500 naming Node.js, python3 works."""
    server = start_server(NODEJS_PATH="/nonexistent/node")
    resp = server.run('console.log("hi")', language="nodejs")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["code"] == -500, body
    assert body["data"] is None, body
    assert "Node.js" in body["message"], body
    assert "/nonexistent/node" in body["message"], body
    assert server.run_ok('print("python still works")')["stdout"] == "python still works\n"


def test_no_node_process_survives_sigterm(start_server, tmp_path: Path, sleep_marker: str):
    """Scenario: SIGTERM a server with an idle node pool and a nodejs run that would never end.

    1. Start a server whose per-run dirs live under a dir of this test (every node process's cwd is inside).
    2. A nodejs run succeeds; the worker now holds idle pooled node processes.
    3. Start a nodejs run that spawns `sleep <marker>` and never ends; wait for the sleep.
    4. SIGTERM the server's group: after the 1 s grace the server exits.
    5. No node process seen under the server, no process working inside the run dir and no `sleep <marker>` is alive.
    """
    run_dir = tmp_path / "runs"
    run_dir.mkdir()
    server = start_server(SANDBOX_RUN_DIR=run_dir, SANDBOX_GRACE_SECONDS=1)
    assert server.run_ok('console.log("warm")', language="nodejs")["stdout"] == "warm\n"

    def node_children() -> list[psutil.Process]:
        return [proc for proc in server.descendants() if BOOTSTRAP_MARKER in cmdline(proc)]

    assert wait_for(lambda: len(node_children()) >= 1, 3), f"no pooled node process: {server.descendants()}"
    code = (
        "const { spawn } = require('child_process');\n"
        f"spawn('sleep', ['{sleep_marker}'], {{ detached: false, stdio: 'ignore' }});\n"
        "setInterval(() => {}, 1000);\n"
    )
    in_flight = server.submit_run(code, language="nodejs", timeout=20)

    def sleepers() -> list[psutil.Process]:
        return [p for p in psutil.process_iter() if cmdline(p) == f"sleep {sleep_marker}" and alive(p)]

    assert wait_for(sleepers, 5), "the in-flight snippet's sleep never appeared"
    seen = {proc.pid: proc for proc in node_children()}
    assert len(seen) >= 2, f"expected idle and running node processes, saw {len(seen)}"

    os.killpg(server.pgid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while server.proc.poll() is None and time.monotonic() < deadline:
        seen.update((proc.pid, proc) for proc in node_children())
        time.sleep(0.05)
    assert server.proc.poll() is not None, "the server did not exit within 10 s of SIGTERM"
    with contextlib.suppress(Exception):
        in_flight.result(timeout=5)  # answered or dropped; only what survives matters here

    def in_run_dir() -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error, ValueError):
                if alive(proc) and Path(proc.cwd()).is_relative_to(run_dir):
                    found.append(proc)
        return found

    def survivors() -> list[tuple[int, str]]:
        left = [proc for proc in seen.values() if alive(proc)] + in_run_dir() + sleepers()
        return [(proc.pid, cmdline(proc)) for proc in left]

    assert wait_for(lambda: not survivors(), 2), f"survived the server's SIGTERM: {survivors()}"
    assert list(run_dir.iterdir()) == [], "the node pool's run dirs were not removed"

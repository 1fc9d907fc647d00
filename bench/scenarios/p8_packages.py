"""P8: a snippet that imports pandas, right after ``update``, over new connections, against a fresh interpreter.

The scenario starts its own server (every worker, the default count) with a requirements file naming the pandas
and numpy this interpreter has, so the zygotes preload both; calls ``POST /v1/sandbox/dependencies/update``,
which answers once every worker re-warmed; then times 200 runs of ``import pandas`` plus a 1,000-row DataFrame
sum, each over a new TCP connection (so the kernel hands them to every worker), interleaved with 10 runs of
``python -I -c`` of the same snippet. It also reports each zygote's memory, what a ``fork`` costs a process with
pandas and numpy imported against one without, and how long a restart with the unchanged file takes: to
``/health`` and to a run that finds pandas preloaded.
"""

from __future__ import annotations

import http.client
import importlib.metadata
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # no stubs in the dev group

from bench.context import BenchContext, Scenario
from bench.payloads import HEADERS, run_body
from bench.report import RESULTS_DIR, ScenarioResult
from bench.server import Server
from bench.stats import percentile
from dify_sandbox.executors.zygote.preload import THREAD_COUNT_VARIABLES

SNIPPET = "import pandas as pd\nprint(int(pd.DataFrame({'a': range(1000)})['a'].sum()))\n"
EXPECTED = "499500\n"
RUNS = 200
BASELINE_RUNS = 10
FORKS = 200
TARGET_P50_MS = 5.0
TARGET_BASELINE_MS = 200.0
WARM_TIMEOUT = 120.0
_FORK_PROBE = """\
import os, sys, time
for name in sys.argv[1:]:
    __import__(name)
start = time.perf_counter()
for _ in range({forks}):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
print((time.perf_counter() - start) * 1000 / {forks})
"""


def _post(server: Server, path: str, body: dict[str, object], timeout: float = 30.0) -> tuple[float, dict]:
    """One request over a new connection: milliseconds and the decoded envelope."""
    start = time.perf_counter()
    connection = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
    try:
        connection.request("POST", path, json.dumps(body), HEADERS)
        envelope = json.loads(connection.getresponse().read())
    finally:
        connection.close()
    return (time.perf_counter() - start) * 1000, envelope


def _fresh_ms(python: str) -> float:
    start = time.perf_counter()
    done = subprocess.run([python, "-I", "-c", SNIPPET], capture_output=True, check=True)
    if done.stdout.decode() != EXPECTED:
        raise RuntimeError(f"fresh interpreter printed {done.stdout!r}")
    return (time.perf_counter() - start) * 1000


def _fork_ms(python: str, *modules: str) -> float:
    """Milliseconds per fork and reap of a process that imported ``modules``, thread counts pinned as in the zygote."""
    code = _FORK_PROBE.format(forks=FORKS)
    env = {**os.environ, **dict.fromkeys(THREAD_COUNT_VARIABLES, "1")}
    done = subprocess.run([python, "-c", code, *modules], capture_output=True, check=True, text=True, env=env)
    return float(done.stdout)


def _zygotes(server: Server) -> list[psutil.Process]:
    found = []
    for proc in psutil.Process(server.pid).children(recursive=True):
        try:
            if "dify_sandbox.executors.zygote" in " ".join(proc.cmdline()) and "zygote" not in " ".join(
                proc.parent().cmdline()
            ):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _warm(server: Server) -> float:
    """Seconds until a run finds pandas preloaded."""
    start = time.monotonic()
    while time.monotonic() - start < WARM_TIMEOUT:
        _, envelope = _post(server, "/v1/sandbox/run", run_body("import sys\nprint('pandas' in sys.modules)"))
        if envelope.get("code") == 0 and envelope["data"]["stdout"] == "True\n":
            return time.monotonic() - start
        time.sleep(0.05)
    raise RuntimeError("pandas never became preloaded")


def run(context: BenchContext) -> ScenarioResult:
    result = ScenarioResult("P8", "pandas snippet after update, new connections, every worker")
    workdir = Path(tempfile.mkdtemp(prefix="bench-p8-"))
    requirements = workdir / "python-requirements.txt"
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in ("pandas", "numpy")]
    requirements.write_text("\n".join(pins) + "\n")
    env = {"SANDBOX_REQUIREMENTS_FILES": str(requirements), "SANDBOX_PACKAGES_DIR": str(workdir / "packages")}
    log = RESULTS_DIR / f"{context.stamp}-server-p8.log"
    server = Server(context.python, log, env)
    server.start()
    try:
        _warm(server)
        update_ms, envelope = _post(server, "/v1/sandbox/dependencies/update", {"language": "python3"}, 300.0)
        if envelope.get("code") != 0:
            raise RuntimeError(f"update failed: {envelope}")
        server_ms: list[float] = []
        trivial_ms: list[float] = []
        baseline_ms: list[float] = []
        failures = 0
        for index in range(RUNS):
            elapsed, envelope = _post(server, "/v1/sandbox/run", run_body(SNIPPET))
            if envelope.get("code") == 0 and envelope["data"]["stdout"] == EXPECTED:
                server_ms.append(elapsed)
            else:
                failures += 1
            elapsed, envelope = _post(server, "/v1/sandbox/run", run_body("print(1)"))
            trivial_ms.append(elapsed)
            if index % (RUNS // BASELINE_RUNS) == 0:
                baseline_ms.append(_fresh_ms(context.python))
        zygotes = _zygotes(server)
        rss = [proc.memory_info().rss / 2**20 for proc in zygotes]
        uss = [proc.memory_full_info().uss / 2**20 for proc in zygotes]
        server.stop()
        restart_started = time.monotonic()
        server.start()
        restart_health = time.monotonic() - restart_started
        restart_warm = restart_health + _warm(server)
    finally:
        server.stop()
    p50 = percentile(server_ms, 50)
    baseline = percentile(baseline_ms, 50)
    fork_plain = _fork_ms(context.python)
    fork_pandas = _fork_ms(context.python, "numpy", "pandas")
    result.add("update (every worker re-warmed)", update_ms, "ms")
    result.add("server p50", p50, "ms", f"<= {TARGET_P50_MS:g} ms", p50 <= TARGET_P50_MS)
    result.add("server p99", percentile(server_ms, 99), "ms")
    trivial = percentile(trivial_ms, 50)
    result.add("print(1) p50, same server", trivial, "ms")
    result.add("pandas / print(1) p50", p50 / trivial, "x")
    result.add("fresh interpreter p50", baseline, "ms", f">= {TARGET_BASELINE_MS:g} ms", baseline >= TARGET_BASELINE_MS)
    result.add("fresh / server p50", baseline / p50, "x")
    result.add("failed runs", failures, "", "0", failures == 0)
    result.add("zygote RSS (each)", max(rss) if rss else None, "MiB")
    result.add("zygote USS (each)", max(uss) if uss else None, "MiB")
    result.add("fork, pandas+numpy imported", fork_pandas, "ms")
    result.add("fork, nothing imported", fork_plain, "ms")
    result.add("fork cost ratio", fork_pandas / fork_plain, "x")
    result.add("restart to /health (file unchanged)", restart_health, "s")
    result.add("restart to pandas preloaded", restart_warm, "s")
    result.details.update(
        {"requirements": pins, "zygotes": len(zygotes), "rss_mib": rss, "uss_mib": uss, "workdir": str(workdir)}
    )
    return result


SCENARIO = Scenario("P8", "pandas after update", needs_server=False, run=run)

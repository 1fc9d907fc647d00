"""The wrk measurement shared by P1, the constant-reply ceiling and N2, so their figures are comparable row by row.

One request is sent first to check that the response body holds the expected stdout byte for byte (JSON-escaped),
since wrk can only count bodies that lack it. Then wrk runs with ``post_check.lua`` while the CPU of the process
under test, of wrk and of the whole machine is accounted for.
"""

from __future__ import annotations

from bench.cpu import MachineWindow, reaped_children_seconds
from bench.payloads import HEADERS, RUN_PATH
from bench.rawhttp import BlockingConnection, build_request
from bench.report import ScenarioResult
from bench.server import Server
from bench.wrk import run_wrk

WRK_THREADS = 2
REQUEST_TIMEOUT_SECONDS = 10.0


def measure(
    result: ScenarioResult,
    server: Server,
    body: bytes,
    expected: bytes,
    *,
    connections: int,
    seconds: float,
    target_runs_per_second: float | None = None,
) -> None:
    """POST ``body`` to the run route for ``seconds`` over ``connections`` and add the figures to ``result``."""
    with BlockingConnection(server.host, server.port, REQUEST_TIMEOUT_SECONDS) as connection:
        probe = connection.request(build_request("POST", server.host, server.port, RUN_PATH, body, HEADERS))
    if probe.status != 200 or expected not in probe.body:
        result.error = f"probe request: HTTP {probe.status}, body lacks {expected!r}: {probe.body[:500]!r}"
        return

    window, cpu_start, wrk_cpu_start = MachineWindow.open(), server.cpu_seconds(), reaped_children_seconds()
    wrk = run_wrk(
        server.base_url + RUN_PATH,
        body,
        expected,
        HEADERS,
        connections=connections,
        threads=WRK_THREADS,
        seconds=seconds,
        timeout_seconds=REQUEST_TIMEOUT_SECONDS,
    )
    server_cpu, wrk_cpu = server.cpu_seconds() - cpu_start, reaped_children_seconds() - wrk_cpu_start
    window.close()
    stats = wrk.stats

    runs_per_second = wrk.good_responses / wrk.seconds
    if target_runs_per_second is None:
        result.add("runs/s", runs_per_second, "runs/s")
    else:
        target, ok = f">= {target_runs_per_second:g}", runs_per_second >= target_runs_per_second
        result.add("runs/s", runs_per_second, "runs/s", target, ok)
    result.add("errors", wrk.errors, target="= 0", ok=wrk.errors == 0)
    result.add("latency p50", stats["latency_p50_us"] / 1000, "ms")
    result.add("latency p99", stats["latency_p99_us"] / 1000, "ms")
    result.add("server CPU per run", 1000 * server_cpu / max(1, wrk.good_responses), "ms")
    result.add("wrk CPU", wrk_cpu / wrk.seconds, "cores")
    result.add("background load", window.background_cores(server_cpu + wrk_cpu), "cores")
    result.details = {
        **stats,
        "good_responses": wrk.good_responses,
        "socket_errors": wrk.socket_errors,
        "server_cpu_seconds": server_cpu,
        "wrk_cpu_seconds": wrk_cpu,
        "machine_busy_seconds": window.busy,
        "wrk_output": wrk.output,
    }
    if wrk.errors:
        result.add(
            "error breakdown",
            f"non2xx={stats['non2xx']} wrong_body={stats['wrong_body']} "
            f"socket={wrk.socket_errors} timeouts={stats['timeouts']}",
        )

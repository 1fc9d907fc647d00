"""Layers: what each confinement layer costs a fork child, timed inside the child, layer by layer.

A process set up as the zygote is (the zygote's default preload modules imported, one ``RunConfinement`` of the
``best-effort`` plan built, ``no_new_privs`` set once, the heap frozen) forks ``--children`` children in a row.
Each one times, with ``time.perf_counter_ns``: (a) entering the Landlock domain with a fresh run dir of its own,
(b) loading the seccomp denylist, (c) going offline (the Landlock TCP ban and the offline filter), writes the
three figures to a pipe and ``os._exit``s. A baseline child, forked in turn with each of them, times an empty
section instead: the timer's own floor. The parent also times each child from ``fork`` to reaping it.

In the server, a spare child does (a) and (b) before its run arrives, off the run's path (unless runs get a uid
of their own, when the service runs as root); only (c) is on it, and only for runs without network.

``bench/run --only layers`` runs it in a fresh interpreter (``--samples``: raw figures as JSON on stdout), so
neither ``no_new_privs`` nor the confinement's fds reach the bench process and the children fork from the
zygote's imports rather than the bench's. ``.venv/bin/python -m bench.isolation_layers`` prints its table.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from bench.report import ScenarioResult, render_table
from bench.stats import percentile
from dify_sandbox.confinement.enforce import RunConfinement  # type: ignore[import-untyped]  # no py.typed
from dify_sandbox.confinement.policy import plan_for  # type: ignore[import-untyped]

if TYPE_CHECKING:
    from bench.context import BenchContext

CHILDREN = 300
ISOLATION = "best-effort"
# The zygote's default SANDBOX_PRELOAD_MODULES (src/dify_sandbox/config.py), imported before the plan is built.
PRELOAD_MODULES = ("json", "base64", "re", "datetime", "zoneinfo", "jinja2", "httpx", "requests")
FIGURES = struct.Struct("=3q")  # nanoseconds of (a), (b), (c); -1 for a layer this host does not offer
NOT_OFFERED = -1
EXIT_CHILD_FAILED = 1
LAYERS = (  # (key in the samples, row name)
    ("domain_ns", "(a) Landlock domain"),
    ("denylist_ns", "(b) seccomp denylist"),
    ("offline_ns", "(c) going offline"),
)
NS_PER = {"µs": 1e3, "ms": 1e6}
SAMPLE_TIMEOUT_SECONDS = 120.0
REPO_ROOT = Path(__file__).resolve().parent.parent


def _timed_layers(conf: RunConfinement, run_dir: str) -> tuple[int, int, int]:
    """In the child: (a), (b) and (c) in the order a run meets them, each timed on its own."""
    clock = time.perf_counter_ns
    domain_ns = denylist_ns = NOT_OFFERED
    if conf.domain is not None:
        start = clock()
        conf.domain.enter(run_dir)
        domain_ns = clock() - start
    if conf.denylist is not None:
        start = clock()
        conf.denylist.load()
        denylist_ns = clock() - start
    start = clock()
    conf.go_offline()
    return domain_ns, denylist_ns, clock() - start


def _timed_nothing() -> tuple[int, int, int]:
    """In the baseline child: an empty timed section, the floor of the figures above."""
    clock = time.perf_counter_ns
    start = clock()
    return clock() - start, NOT_OFFERED, NOT_OFFERED


def _fork_one(conf: RunConfinement | None, run_dir: str) -> tuple[tuple[int, int, int], int]:
    """Forks a child that measures (the layers, or nothing when ``conf`` is None); its figures and its lifetime
    in nanoseconds, seen from here (``fork`` to reaped)."""
    read_fd, write_fd = os.pipe()
    start = time.perf_counter_ns()
    pid = os.fork()
    if pid == 0:
        _child(write_fd, read_fd, conf, run_dir)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read(FIGURES.size)
    _, status = os.waitpid(pid, 0)
    lifetime = time.perf_counter_ns() - start
    if os.waitstatus_to_exitcode(status) != 0 or len(data) != FIGURES.size:
        raise RuntimeError(f"a measuring child failed (wait status {status}, {len(data)} bytes of figures)")
    figures: tuple[int, int, int] = FIGURES.unpack(data)
    return figures, lifetime


def _child(write_fd: int, read_fd: int, conf: RunConfinement | None, run_dir: str) -> NoReturn:
    code = EXIT_CHILD_FAILED
    try:
        os.close(read_fd)
        figures = _timed_nothing() if conf is None else _timed_layers(conf, run_dir)
        os.write(write_fd, FIGURES.pack(*figures))
        code = 0
    except BaseException as exc:
        os.write(2, f"bench.isolation_layers: child failed: {type(exc).__name__}: {exc}\n".encode())
    finally:
        os._exit(code)


def sample(children: int = CHILDREN) -> dict[str, object]:
    """Sets this process up as the zygote and forks the children; the raw figures (ns) and what the host offers.

    Sets ``no_new_privs`` on this process: run it in a process of its own.
    """
    for name in PRELOAD_MODULES:
        importlib.import_module(name)

    plan = plan_for(ISOLATION, avoid=[tempfile.gettempdir(), os.getcwd()])
    if plan is None:
        raise RuntimeError(f"plan_for({ISOLATION!r}) gave no confinement")
    conf = RunConfinement(plan)
    RunConfinement.prepare_process()  # no_new_privs, once, inherited by every child (as in the zygote)
    gc.collect()
    gc.freeze()  # as the zygote does before it forks
    samples: dict[str, list[int]] = {key: [] for key, _ in LAYERS}
    samples |= {"baseline_ns": [], "lifetime_ns": [], "baseline_lifetime_ns": []}
    with tempfile.TemporaryDirectory(prefix="bench-layers-") as root:
        for i in range(children):
            run_dir = os.path.join(root, str(i))
            os.mkdir(run_dir, 0o700)  # fresh per child, as a run's own dir
            # Each layered child is followed by a baseline one, so both see the same machine.
            (domain_ns, denylist_ns, offline_ns), lifetime = _fork_one(conf, run_dir)
            (empty_ns, _, _), baseline_lifetime = _fork_one(None, run_dir)
            for key, value in (
                ("domain_ns", domain_ns),
                ("denylist_ns", denylist_ns),
                ("offline_ns", offline_ns),
                ("baseline_ns", empty_ns),
                ("lifetime_ns", lifetime),
                ("baseline_lifetime_ns", baseline_lifetime),
            ):
                if value != NOT_OFFERED:
                    samples[key].append(value)
    return {
        "children": children,
        "isolation": ISOLATION,
        "landlock_abi": plan.landlock_abi,
        "seccomp": plan.denylist is not None,
        "offline_filter": conf.offline is not None,
        "landlock_tcp_ban": conf.network_ban is not None,
        "preload_modules": list(PRELOAD_MODULES),
        "samples": samples,
    }


def summarise(measured: dict[str, object]) -> ScenarioResult:
    """The table's figures (µs) from :func:`sample`'s raw ones."""
    title = "isolation layers timed in a fork child: (a) domain.enter(run_dir), (b) denylist.load(), (c) go_offline()"
    result = ScenarioResult("layers", f"{title}, {measured['children']} children")
    samples = measured["samples"]
    assert isinstance(samples, dict)

    def add(name: str, key: str, unit: str = "µs") -> None:
        values: Sequence[int] = samples[key]
        for pct in (50, 90):
            value = percentile(values, pct) / NS_PER[unit] if values else None
            result.add(f"{name} p{pct}", value, unit)

    for key, name in LAYERS:
        add(name, key)
    add("baseline (empty section)", "baseline_ns")
    add("fork to reap, with (a)-(c)", "lifetime_ns", "ms")
    add("fork to reap, baseline", "baseline_lifetime_ns", "ms")
    result.add("on a run's path", "(c) only, and only for runs without network")
    result.add("off a run's path", "(a), (b): done by the spare child before its run arrives (not with per-run uids)")
    result.details = measured
    return result


def run(ctx: BenchContext) -> ScenarioResult:
    """The scenario: :func:`sample` in a fresh interpreter, so the bench process keeps its privileges and fds."""
    proc = subprocess.run(
        [ctx.python, "-m", "bench.isolation_layers", "--samples"],
        cwd=REPO_ROOT,  # the server's working dir, which the plan leaves out as the zygote's does
        capture_output=True,
        text=True,
        timeout=SAMPLE_TIMEOUT_SECONDS,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"bench.isolation_layers exited with {proc.returncode}:\n{proc.stderr[-2000:]}")
    return summarise(json.loads(proc.stdout))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.isolation_layers", description=__doc__)
    parser.add_argument("--children", type=int, default=CHILDREN, help=f"children of each kind (default {CHILDREN})")
    parser.add_argument("--samples", action="store_true", help="print the raw figures as JSON instead of the table")
    args = parser.parse_args(argv)
    measured = sample(args.children)
    if args.samples:
        json.dump(measured, sys.stdout)
    else:
        print(render_table([summarise(measured)]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

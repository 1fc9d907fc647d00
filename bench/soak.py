"""Soak: a server under a mix of normal and faulty runs for some minutes; its resources must stay flat.

Usage (from the repository root)::

    .venv/bin/python -m bench.soak --minutes 10

It starts ``python -m dify_sandbox serve`` on a free loopback port (defaults otherwise, plus the limits below), then
``--clients`` threads each send one run at a time until the time is up: mostly normal python3 and nodejs runs that
print a marker of their own, and about a quarter faulty ones (timeouts, busy loops, memory hogs, output floods,
segfaults, exceptions, ``os._exit``, too many open files, children and double-forked daemons left behind). Every
answer is checked against what that run must give.

At the start (after a warm-up), every ``--sample-every`` seconds and at the end the clients pause, the server is left
to settle (no run in flight, process count steady), and one sample is taken of the server's process tree: RSS (sum),
open fds, processes, threads, zygotes, and processes the runs left behind anywhere on the machine (``sleep`` with
this soak's marker). The table shows every sample; each figure is then judged flat or not, end against start:

- RSS: may grow by 25 % or 48 MiB, whichever is larger (allocator and import caches settle in the first minutes);
- open fds: may grow by 8; threads: by 4 (the server's thread pools start lazily);
- processes and zygotes: must be equal; leftovers: must be 0.

The exit status is 0 when every figure is flat and every run answered as expected, 1 otherwise. The server's output
goes to ``bench/results/soak-<timestamp>.log``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]  # no stubs in the dev group

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
ZYGOTE_MARKER = "dify_sandbox.executors.zygote"
API_KEY = "dify-sandbox"
MIB = 1024 * 1024
SERVER_ENV = {
    "WORKER_TIMEOUT": "2",
    "SANDBOX_OUTPUT_LIMIT_BYTES": str(8 * MIB),
    "SANDBOX_MEMORY_LIMIT_MB": "512",
    "SANDBOX_MAX_FILE_SIZE_MB": "64",
}
REQUEST_TIMEOUT = 30.0
READY_TIMEOUT = 60.0


# --- the run mix ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """One kind of run: how to write it (from a unique marker) and what its `data` must be."""

    name: str
    weight: int
    language: str
    code: Callable[[str], str]
    check: Callable[[dict[str, Any], str], bool]


def _ok(data: dict[str, Any], marker: str) -> bool:
    return data == {"stdout": f"{marker}\n", "stderr": "", "error": "", "exit_code": 0}


def _ended(exit_code: int, reason: str = "") -> Callable[[dict[str, Any], str], bool]:
    def check(data: dict[str, Any], _: str) -> bool:
        return data["exit_code"] == exit_code and (not reason or f"\n{reason}\n" in data["error"])

    return check


def _quiet_exit(data: dict[str, Any], marker: str) -> bool:
    return bool(data["exit_code"] == 0 and data["stdout"] == f"{marker}\n")


def mix(leftover: str) -> list[Kind]:
    """The run kinds and their weights; `leftover` is the `sleep` argument of every process a run leaves behind."""
    return [
        Kind("python-ok", 50, "python3", lambda m: f"print('{m}')", _ok),
        Kind("nodejs-ok", 15, "nodejs", lambda m: f"console.log('{m}');", _ok),
        Kind("exception", 5, "python3", lambda m: "1 / 0", _ended(255)),
        Kind("timeout", 2, "python3", lambda m: "import time\ntime.sleep(100)", _ended(-1, "error: timeout")),
        Kind("busy-loop", 2, "python3", lambda m: "while True:\n    pass", _ended(-1, "error: timeout")),
        Kind(
            "memory-hog", 3, "python3", lambda m: "x = bytearray(1 << 30)", _ended(255, "error: memory limit exceeded")
        ),
        Kind(
            "output-flood",
            2,
            "python3",
            lambda m: "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)",
            _ended(-1, "error: output limit exceeded"),
        ),
        Kind(
            "segfault",
            3,
            "python3",
            lambda m: "import ctypes\nctypes.string_at(0)",
            _ended(-1, "error: killed by signal SIGSEGV"),
        ),
        Kind("os-exit", 3, "python3", lambda m: "import os\nos._exit(3)", _ended(3)),
        Kind(
            "open-files",
            2,
            "python3",
            lambda m: "import os\nfiles = [open(os.devnull) for _ in range(5000)]",
            _ended(255, "error: open files limit exceeded"),
        ),
        Kind(
            "child-left-behind",
            3,
            "python3",
            lambda m: f"import subprocess\nsubprocess.Popen(['sleep', '{leftover}'])\nprint('{m}')",
            _quiet_exit,
        ),
        Kind(
            "daemon-left-behind",
            3,
            "python3",
            lambda m: (
                "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                f"        os.execvp('sleep', ['sleep', '{leftover}'])\n    os._exit(0)\n"
                f"time.sleep(0.1)\nprint('{m}')"
            ),
            _quiet_exit,
        ),
        Kind("nodejs-throw", 3, "nodejs", lambda m: "throw new Error('boom');", _ended(1)),
        Kind("nodejs-busy-loop", 1, "nodejs", lambda m: "while (true) {}", _ended(-1, "error: timeout")),
        Kind(
            "nodejs-child-left-behind",
            2,
            "nodejs",
            lambda m: (
                f"require('child_process').spawn('sleep', ['{leftover}'], {{ stdio: 'ignore' }}).unref();\n"
                f"console.log('{m}');"
            ),
            _quiet_exit,
        ),
    ]


# --- the server ----------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class SoakServer:
    """`python -m dify_sandbox serve` in its own session, output to a log file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env, "SANDBOX_PORT": str(self.port), "SANDBOX_HOST": "127.0.0.1"}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "dify_sandbox", "serve"],
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + READY_TIMEOUT
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the server exited with {self.process.returncode}; see {self.log_path}")
                with contextlib.suppress(httpx.TransportError):
                    if client.get(f"{self.url}/health").status_code == 200:
                        return
                time.sleep(0.1)
        raise RuntimeError(f"the server did not answer /health within {READY_TIMEOUT:.0f} s; see {self.log_path}")

    def stop(self) -> int | None:
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        return process.returncode

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tree(self) -> list[psutil.Process]:
        """The server process and its descendants (empty once it has exited)."""
        if not self.alive():
            return []
        assert self.process is not None
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []


# --- sampling -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    elapsed: float  # seconds since the load started
    runs: int
    rss_mib: float
    fds: int
    processes: int
    threads: int
    zygotes: int
    leftovers: int


def _cmdline(proc: psutil.Process) -> str:
    with contextlib.suppress(psutil.Error):
        return " ".join(proc.cmdline())
    return ""


def take_sample(server: SoakServer, leftover: str, elapsed: float, runs: int) -> Sample:
    rss = fds = threads = 0
    live: list[psutil.Process] = []
    for proc in server.tree():
        with contextlib.suppress(psutil.Error):
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            rss += proc.memory_info().rss
            fds += proc.num_fds()
            threads += proc.num_threads()
            live.append(proc)
    zygote_pids = {proc.pid for proc in live if ZYGOTE_MARKER in _cmdline(proc)}
    zygotes = 0
    for proc in live:
        with contextlib.suppress(psutil.Error):
            if proc.pid in zygote_pids and proc.ppid() not in zygote_pids:
                zygotes += 1
    leftovers = 0
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["cmdline"] == ["sleep", leftover] and proc.info["status"] != psutil.STATUS_ZOMBIE:
            leftovers += 1
    return Sample(elapsed, runs, rss / MIB, fds, len(live), threads, zygotes, leftovers)


# --- the load -----------------------------------------------------------------------------------------------------


@dataclass
class Load:
    server: SoakServer
    kinds: list[Kind]
    clients: int
    deadline: float = 0.0
    gate: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: int = 0
    runs: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self, deadline: float) -> None:
        self.deadline = deadline
        self.gate.set()
        for index in range(self.clients):
            thread = threading.Thread(target=self._client, args=(index,), name=f"soak-{index}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def join(self) -> None:
        self.gate.set()
        for thread in self.threads:
            thread.join(REQUEST_TIMEOUT + 5)

    def pause(self, timeout: float = 60.0) -> bool:
        """Stops new runs and waits until none is in flight."""
        self.gate.clear()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self.in_flight == 0:
                    return True
            time.sleep(0.05)
        return False

    def resume(self) -> None:
        self.gate.set()

    def _client(self, index: int) -> None:
        rng = random.Random(index)
        weights = [kind.weight for kind in self.kinds]
        token = secrets.token_hex(3)
        with httpx.Client(
            base_url=self.server.url, headers={"X-Api-Key": API_KEY}, timeout=REQUEST_TIMEOUT, trust_env=False
        ) as http:
            seq = 0
            while time.monotonic() < self.deadline:
                if not self.gate.wait(1.0):
                    continue
                with self.lock:
                    self.in_flight += 1
                try:
                    seq += 1
                    kind = rng.choices(self.kinds, weights)[0]
                    marker = f"soak-{token}-{index}-{seq}"
                    problem = self._one(http, kind, marker)
                finally:
                    with self.lock:
                        self.in_flight -= 1
                with self.lock:
                    self.runs += 1
                    self.by_kind[kind.name] += 1
                    if problem is not None:
                        self.failures[kind.name] += 1
                        if len(self.examples) < 10:
                            self.examples.append(f"{kind.name} {marker}: {problem}")

    def _one(self, http: httpx.Client, kind: Kind, marker: str) -> str | None:
        body = {"language": kind.language, "code": kind.code(marker), "preload": "", "enable_network": True}
        try:
            resp = http.post("/v1/sandbox/run", json=body)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if resp.status_code != 200:
            return f"HTTP {resp.status_code} {resp.text[:200]}"
        envelope = resp.json()
        if envelope.get("code") != 0:
            return f"code {envelope.get('code')}: {envelope.get('message')}"
        data = envelope["data"]
        if not kind.check(data, marker):
            shown = {key: (value[:120] if isinstance(value, str) else value) for key, value in data.items()}
            return f"unexpected data {shown}"
        return None


def settle(server: SoakServer, timeout: float = 15.0) -> None:
    """Waits until the server's process count has stayed the same for a second (node pool refilled, runs reaped)."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = 0
        for proc in server.tree():
            with contextlib.suppress(psutil.Error):
                count += proc.status() != psutil.STATUS_ZOMBIE
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= 1.0:
            return
        time.sleep(0.1)


# --- verdicts --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    name: str
    start: float
    end: float
    allowed: float
    rule: str

    @property
    def flat(self) -> bool:
        return self.end <= self.start + self.allowed and self.end >= self.start - self.allowed

    @property
    def shown(self) -> str:
        return f"{self.start:g} -> {self.end:g}"


def verdicts(first: Sample, last: Sample) -> list[Verdict]:
    rss_allowed = max(first.rss_mib * 0.25, 48.0)
    return [
        Verdict("RSS (MiB)", round(first.rss_mib, 1), round(last.rss_mib, 1), rss_allowed, "+25 % or 48 MiB"),
        Verdict("open fds", first.fds, last.fds, 8, "+8"),
        Verdict("processes", first.processes, last.processes, 0, "equal"),
        Verdict("threads", first.threads, last.threads, 4, "+4"),
        Verdict("zygotes", first.zygotes, last.zygotes, 0, "equal"),
        Verdict("left behind", 0, last.leftovers, 0, "0"),
    ]


def render(samples: list[Sample]) -> str:
    header = (
        f"{'t (s)':>7} {'runs':>7} {'RSS MiB':>8} {'fds':>5} {'procs':>6} {'threads':>8} {'zygotes':>8} {'left':>5}"
    )
    lines = [header, "-" * len(header)]
    for s in samples:
        lines.append(
            f"{s.elapsed:7.0f} {s.runs:7d} {s.rss_mib:8.1f} {s.fds:5d} {s.processes:6d} {s.threads:8d} "
            f"{s.zygotes:8d} {s.leftovers:5d}"
        )
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------------------------------


def env_item(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the load runs (default 10)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent client threads (default 4)")
    parser.add_argument("--sample-every", type=float, default=60.0, help="seconds between samples (default 60)")
    parser.add_argument(
        "--server-env", type=env_item, action="append", default=[], metavar="NAME=VALUE", help="extra server setting"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    leftover = f"86.{secrets.randbelow(10**7):07d}"  # every process a run leaves behind is `sleep <leftover>`
    stamp = time.strftime("%Y%m%dT%H%M%S")
    server = SoakServer({**SERVER_ENV, **dict(args.server_env)}, RESULTS_DIR / f"soak-{stamp}.log")
    load = Load(server, mix(leftover), args.clients)
    print(f"soak: {args.minutes:g} min, {args.clients} clients, server log {server.log_path}", flush=True)
    server.start()
    samples: list[Sample] = []
    try:
        with httpx.Client(base_url=server.url, headers={"X-Api-Key": API_KEY}, trust_env=False) as http:
            for language, code in (("python3", "print(1)"), ("nodejs", "console.log(1)")) * 5:
                http.post("/v1/sandbox/run", json={"language": language, "code": code}, timeout=30)
        settle(server)
        started = time.monotonic()
        samples.append(take_sample(server, leftover, 0.0, 0))
        print(render(samples), flush=True)
        end = started + args.minutes * 60
        load.start(end)
        next_sample = started + args.sample_every
        while time.monotonic() < end:
            time.sleep(min(1.0, max(0.0, min(next_sample, end) - time.monotonic())))
            if time.monotonic() >= next_sample and time.monotonic() < end:
                if not load.pause():
                    print("soak: runs still in flight after 60 s; sampling anyway", flush=True)
                settle(server)
                samples.append(take_sample(server, leftover, time.monotonic() - started, load.runs))
                print(render(samples[-1:]).splitlines()[-1], flush=True)
                load.resume()
                next_sample += args.sample_every
            if not server.alive():
                print("soak: the server exited", flush=True)
                break
        load.deadline = 0.0  # ends the clients early if the server died
        load.join()
        alive = server.alive()
        if alive:
            settle(server)
            samples.append(take_sample(server, leftover, time.monotonic() - started, load.runs))
            print(render(samples[-1:]).splitlines()[-1], flush=True)
    finally:
        exit_status = server.stop()
        with contextlib.suppress(psutil.Error):
            for proc in psutil.process_iter(["cmdline"]):
                if proc.info["cmdline"] == ["sleep", leftover]:
                    proc.kill()

    print()
    print(render(samples))
    print()
    judged = verdicts(samples[0], samples[-1])
    for verdict in judged:
        state = "flat" if verdict.flat else "NOT FLAT"
        print(f"{verdict.name:12} {verdict.shown:>20}  allowed {verdict.rule:16} {state}")
    print()
    wrong = sum(load.failures.values())
    rate = load.runs / (args.minutes * 60)
    print(f"runs: {load.runs} in {args.minutes:g} min ({rate:.1f}/s), unexpected answers: {wrong}")
    print("  " + ", ".join(f"{name} {count}" for name, count in load.by_kind.most_common()))
    for example in load.examples:
        print(f"  unexpected: {example}")
    print(f"server: {'alive until stopped' if alive else 'EXITED EARLY'}; exit status after SIGTERM {exit_status}")
    ok = alive and wrong == 0 and all(verdict.flat for verdict in judged)
    print("soak: PASS" if ok else "soak: FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

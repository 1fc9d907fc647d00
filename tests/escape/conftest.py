"""Fixtures of the escape tier: the service started as the image deploys it, and hostile runs against it.

The server is the installed `dify-sandbox serve` of an image-like venv built from Debian's system
Python (`SANDBOX_IMAGE_VENV`, default `/tmp/image-venv`; `scripts/install-image` puts the current
source into it once per session), started with `setpriv` as uid 1000 in a working dir of uid 1000
that holds its config file, with a random API key in its environment and in that file, two server
workers and `SANDBOX_ISOLATION=strict`. A run therefore has the service's own uid: only the
isolation (Landlock, seccomp, non-dumpable processes) stands between a snippet and the service.

Tests find the service's processes from this process (root) with psutil and pass their pids to the
snippets inside the code (see `attacks.py` for how a snippet reports). Fixtures:
- `sandbox`: the session's `EscapeService`; started again first if an earlier attack broke it.
- `victim`: `victim(language) -> Victim`, a concurrent run holding a secret, released at the end.
- `sleep_marker`: as in tests/integration.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

# The leak check, `sleep_marker` and the hook that adds the server's output to a failure apply here too.
from tests.integration.conftest import (  # noqa: F401 - fixtures and a hook, found by pytest by name
    SHARED_SERVERS,
    ZYGOTE_MARKER,
    Server,
    _cmdline,
    _no_leaked_children,
    attach,
    free_port,
    launch_server,
    pytest_runtest_makereport,
    sleep_marker,
)
from tests.polling import wait_for

from .attacks import Report, victim_snippet

SERVICE_UID = 1000
SYSTEM_PYTHON = Path("/usr/bin/python3.11")
REPO = Path(__file__).resolve().parents[2]
WORKERS = 2
NODE_POOL_SIZE = 2  # the default SANDBOX_NODE_POOL_SIZE, per worker
NODE_MARKER = "node_bootstrap"
INSTALL_TIMEOUT = 600.0
# Pools refill in the background after a run; attacks on idle processes wait for them.
SETTLE_TIMEOUT = 5.0
EXPECTED_COUNTS = (WORKERS, WORKERS, WORKERS * NODE_POOL_SIZE)  # zygotes, spares, idle node processes
VICTIM_TIMEOUT = 5.0
# An attack that got through may have stopped the worker serving it: fail in seconds, not minutes.
ATTACK_TIMEOUT = 10.0


def _unsupported() -> str | None:
    """Why this host cannot run the tier, or None."""
    if os.geteuid() != 0:
        return "the escape tier starts the service as uid 1000 with setpriv and needs root"
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is missing"
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} is missing: the image-like venv is built from Debian's system Python"
    return None


def _chown(path: Path, mode: int) -> None:
    os.chmod(path, mode)
    os.chown(path, SERVICE_UID, SERVICE_UID)


@pytest.fixture(scope="session")
def image_venv() -> Path:
    """The image-like venv with the current source installed (built or refreshed by scripts/install-image)."""
    reason = _unsupported()
    if reason:
        pytest.skip(reason)
    venv = Path(os.environ.get("SANDBOX_IMAGE_VENV", "/tmp/image-venv"))
    if (venv / "pyvenv.cfg").exists() and Path(venv / "bin/python").resolve() != SYSTEM_PYTHON.resolve():
        # A venv of another interpreter (pyenv's, under /root) is unusable by uid 1000: make it anew.
        subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", "--clear", str(venv)], check=True, timeout=120)
    done = subprocess.run(
        ["./scripts/install-image", str(venv)],
        cwd=REPO,
        env={**os.environ, "PYTHON": str(SYSTEM_PYTHON)},
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"scripts/install-image {venv} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return venv


@dataclass(frozen=True, slots=True)
class Roles:
    """The service's processes by role, as pids (seen from outside, while no run is in flight)."""

    supervisor: int
    workers: list[int]
    trackers: list[int]  # multiprocessing's resource tracker
    zygotes: list[int]
    spares: list[int]  # forked ahead by a zygote, waiting for the next run
    nodes: list[int]  # pooled node processes waiting for their code
    everything: list[int]  # the supervisor and every live descendant

    def counts(self) -> tuple[int, int, int]:
        """How many zygotes, spares and idle node processes there are."""
        return len(self.zygotes), len(self.spares), len(self.nodes)

    def targets(self, *roles: str) -> list[tuple[str, int]]:
        """(role, pid) pairs of the named roles, for a snippet's ARGS."""
        pairs = []
        for role in roles:
            value = getattr(self, role)
            pairs.extend((role, pid) for pid in ([value] if isinstance(value, int) else value))
        return pairs


@dataclass(slots=True)
class Victim:
    """A concurrent run that holds `secret` and listens on the abstract unix socket `socket_name`."""

    language: str
    secret: str
    socket_name: str
    future: Future[httpx.Response]
    pid: int = 0
    cwd: str = ""
    released: bool = False

    def release(self) -> dict[str, Any]:
        """Lets the victim finish (SIGCONT, SIGUSR2) and returns its result's `data`."""
        if not self.released:
            self.released = True
            for signum in (signal.SIGCONT, signal.SIGUSR2):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signum)
        resp = self.future.result(timeout=20)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["code"] == 0, body
        return body["data"]

    def assert_unharmed(self) -> None:
        """The victim ran to its end and printed exactly what it would have printed alone."""
        data = self.release()
        expected = {"stdout": f"VICTIM OK {self.secret}\n", "stderr": "", "error": "", "exit_code": 0}
        assert data == expected, f"the victim run was disturbed: {data}"


@dataclass
class EscapeService:
    """The server of this tier, what a test needs to attack it, and the checks that it was not harmed."""

    home: Path
    venv: Path
    server: Server | None = None
    secret: str = ""
    config_file: Path = Path()
    launches: int = 0
    full_counts: tuple[int, int, int] = EXPECTED_COUNTS
    relaunch_reasons: list[str] = field(default_factory=list)

    # --- the server -------------------------------------------------------------------------------
    def launch(self) -> None:
        """Starts a server with a fresh secret, workdir and config file, all belonging to uid 1000."""
        self.launches += 1
        self.secret = f"escape-key-{secrets.token_hex(16)}"
        port = free_port()
        workdir = self.home / f"server{self.launches}"
        workdir.mkdir()
        _chown(workdir, 0o755)
        conf = workdir / "conf"
        conf.mkdir()
        _chown(conf, 0o700)
        self.config_file = conf / "config.yaml"
        self.config_file.write_text(f"app:\n  port: {port}\n  key: {self.secret}\n")
        _chown(self.config_file, 0o600)
        argv = [
            "setpriv", "--reuid", str(SERVICE_UID), "--regid", str(SERVICE_UID), "--clear-groups",
            str(self.venv / "bin/dify-sandbox"), "serve",
        ]  # fmt: skip
        self.server = launch_server(
            workdir,
            wait=False,
            port=port,
            argv=argv,
            API_KEY=self.secret,
            SANDBOX_CONFIG_FILE=self.config_file,
            SANDBOX_WORKERS=WORKERS,
            # Every layer, or no start: a layer this host lacks must not quietly weaken the tier.
            SANDBOX_ISOLATION="strict",
            WORKER_TIMEOUT=10,
            HOME=workdir,
            TMPDIR="/tmp",
        )
        SHARED_SERVERS.append(self.server)
        self.server.wait_ready()
        self.full_counts = EXPECTED_COUNTS
        self.full_counts = self.settle().counts()

    def close(self) -> None:
        if self.server is not None:
            self.continue_all()
            self.server.stop()
            with contextlib.suppress(ValueError):
                SHARED_SERVERS.remove(self.server)

    def problem(self) -> str | None:
        """Why the server cannot serve the next test (an earlier attack broke it), or None."""
        assert self.server is not None
        if self.server.proc.poll() is not None:
            return f"exited with {self.server.proc.returncode}"
        if stopped := self.stopped():
            return f"stopped processes {stopped}"
        if (status := self.server.health_status(timeout=2)) != 200:
            return f"/health answers {status}"
        for language, code in (("python3", "print(6 * 7)"), ("nodejs", "console.log(6 * 7)")):
            try:
                data = self.server.run_ok(code, language=language, timeout=10)
            except (AssertionError, httpx.HTTPError) as exc:
                return f"a {language} run fails: {exc!r}"
            if data["stdout"] != "42\n":
                return f"a {language} run printed {data}"
        return None

    def relaunch(self, reason: str) -> None:
        """Replaces a broken server (the reason is kept for the report)."""
        self.relaunch_reasons.append(reason)
        self.close()
        self.launch()

    # --- processes --------------------------------------------------------------------------------
    def processes(self) -> list[psutil.Process]:
        """The supervisor and its live descendants."""
        assert self.server is not None
        procs = self.server.descendants()
        if self.server.proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                procs.insert(0, psutil.Process(self.server.proc.pid))
        return procs

    def roles(self, exclude: tuple[int, ...] = ()) -> Roles:
        """The service's processes by role (`exclude`: pids that are runs, such as a victim)."""
        assert self.server is not None
        supervisor = self.server.proc.pid
        procs = [proc for proc in self.processes() if proc.pid not in exclude]
        cmdlines = {proc.pid: _cmdline(proc) for proc in procs}
        parents = {}
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                parents[proc.pid] = proc.ppid()
        zygotes = [proc.pid for proc in self.server.zygotes() if proc.pid not in exclude]
        return Roles(
            supervisor=supervisor,
            workers=[
                pid for pid, cmd in cmdlines.items() if parents.get(pid) == supervisor and "resource_tracker" not in cmd
            ],
            trackers=[pid for pid, cmd in cmdlines.items() if "resource_tracker" in cmd],
            zygotes=zygotes,
            spares=[pid for pid, cmd in cmdlines.items() if parents.get(pid) in zygotes and ZYGOTE_MARKER in cmd],
            nodes=[pid for pid, cmd in cmdlines.items() if NODE_MARKER in cmd],
            everything=sorted(cmdlines),
        )

    def settle(self) -> Roles:
        """Waits (a few seconds at most) until every zygote has its spare and the node pools are full.

        "Full" is what the server reached after its start, so a different steady state after a change
        of the executors costs one wait at start, not one per test.
        """

        def full() -> Roles | None:
            roles = self.roles()
            return roles if roles.counts() == self.full_counts else None

        return wait_for(full, SETTLE_TIMEOUT) or self.roles()

    def stopped(self) -> list[tuple[int, str]]:
        """Processes of the service that are stopped (SIGSTOP) or held by a tracer."""
        found = []
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                if proc.status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP):
                    found.append((proc.pid, _cmdline(proc)))
        return found

    def continue_all(self) -> None:
        """SIGCONT to every process of the service: a SIGSTOP that got through must not stall what follows."""
        if self.server is None:
            return
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGCONT)

    # --- runs -------------------------------------------------------------------------------------
    def attack(self, code: str, *, language: str = "python3", enable_network: bool = True) -> Report:
        """Runs a hostile snippet and reads its report."""
        assert self.server is not None
        data = self.server.run_ok(code, language=language, enable_network=enable_network, timeout=ATTACK_TIMEOUT)
        return Report.of(data)

    def run_ok(self, code: str, **kwargs: Any) -> dict[str, Any]:
        assert self.server is not None
        return self.server.run_ok(code, **kwargs)

    def assert_unharmed(self) -> None:
        """The service answers at once, no process of it is stopped, and both runtimes still work."""
        assert self.server is not None
        assert self.server.proc.poll() is None, f"the supervisor exited with {self.server.proc.returncode}"
        assert self.server.health_status(timeout=1.0) == 200, "the service no longer answers /health within 1 s"
        assert not self.stopped(), f"stopped processes of the service: {self.stopped()}"
        for language, code in (("python3", "print(6 * 7)"), ("nodejs", "console.log(6 * 7)")):
            data = self.server.run_ok(code, language=language, timeout=10)
            assert data == {"stdout": "42\n", "stderr": "", "error": "", "exit_code": 0}, (language, data)


@pytest.fixture(scope="package")
def _escape_service(image_venv: Path) -> Iterator[EscapeService]:
    # Package scope: the service stops when this tier ends, so its processes are never taken for
    # leaks (or pool members) by the tiers after it.
    # pytest's temp dirs are 0700 root: uid 1000 could not reach a workdir inside them.
    home = Path(tempfile.mkdtemp(prefix="dify-escape-"))
    os.chmod(home, 0o755)
    service = EscapeService(home=home, venv=image_venv)
    try:
        service.launch()
        yield service
    finally:
        service.close()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def sandbox(request: pytest.FixtureRequest, _escape_service: EscapeService) -> Iterator[EscapeService]:
    """The tier's server, healthy and with full pools (started again if an earlier attack broke it)."""
    if reason := _escape_service.problem():
        _escape_service.relaunch(reason)
    else:
        _escape_service.settle()
    assert _escape_service.server is not None
    attach(request.node, _escape_service.server)
    yield _escape_service
    _escape_service.continue_all()


@pytest.fixture
def victim(sandbox: EscapeService) -> Iterator[Callable[[str], Victim]]:
    """Factory: `victim(language)` starts a run holding a secret and returns it once it is ready.

    Ready means its `secret.txt` exists, which it writes after blocking SIGUSR2 and binding its
    socket; `Victim.assert_unharmed` releases it. Victims a test did not check are released at the end.
    """
    started: list[Victim] = []

    def start(language: str) -> Victim:
        assert sandbox.server is not None
        secret = f"victim-secret-{secrets.token_hex(8)}"
        socket_name = f"dify-escape-{secrets.token_hex(8)}"
        code = victim_snippet(language, secret, socket_name, waker=os.getpid())
        future = sandbox.server.submit_run(code, language=language)
        found = Victim(language, secret, socket_name, future)
        started.append(found)

        def ready() -> bool:
            for proc in sandbox.processes():
                with contextlib.suppress(OSError):
                    if Path(f"/proc/{proc.pid}/cwd/secret.txt").read_text() == secret:
                        found.pid, found.cwd = proc.pid, os.readlink(f"/proc/{proc.pid}/cwd")
                        return True
            return future.done()

        wait_for(ready, VICTIM_TIMEOUT)
        if not found.pid:
            result = future.result(timeout=1).text if future.done() else "still running"
            pytest.fail(f"the {language} victim never became ready: {result}")
        return found

    yield start
    for started_victim in started:
        with contextlib.suppress(Exception):
            started_victim.release()

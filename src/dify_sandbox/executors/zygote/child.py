"""What a forked run child does, from the moment ``fork`` returns until ``os._exit``.

It isolates itself (new session, only fds 0-2 open, default signal handlers, scrubbed
environment, its own working dir), reads the snippet from its code pipe, runs it as
``__main__`` and leaves only through ``os._exit``, so nothing of the zygote's loop ever runs
again in this process.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # CPython's C half of signal; no stub
import contextlib
import io
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NoReturn, TextIO

from dify_sandbox.confinement.enforce import RunConfinement
from dify_sandbox.executors._rlimits import RunLimits
from dify_sandbox.executors._run_root import make_own_dir
from dify_sandbox.executors.zygote.isolation import drop_privileges, enter_network_namespace
from dify_sandbox.executors.zygote.protocol import SPAWN_FDS, STATUS
from dify_sandbox.runtimes.python3 import fresh_main_module, run_snippet

__all__ = [
    "EXIT_SETUP_FAILURE",
    "ChildSpec",
    "ChildStreams",
    "EnvironmentChanges",
    "enter_run_ahead",
    "prepare_child",
    "run_child",
    "wait_as_spare",
]

# sysexits' EX_SOFTWARE: the child failed before the snippet started.
EXIT_SETUP_FAILURE = 70
_READ_CHUNK = 1 << 20
# Where the status pipe lives in the child: the first fd after stdio.
STATUS_FD = 3
_DEFAULT_SIGNALS = (int(signal.SIGCHLD), int(signal.SIGTERM), int(signal.SIGHUP), int(signal.SIGQUIT))


@dataclass(frozen=True, slots=True)
class EnvironmentChanges:
    """What turns the zygote's environment into a run's: the zygote works them out once, children apply them.

    Rebuilding ``os.environ`` in every child would touch (and so copy) dozens of shared pages.
    """

    remove: tuple[str, ...]
    assign: Mapping[str, str]

    @classmethod
    def towards(cls, target: Mapping[str, str]) -> EnvironmentChanges:
        """The changes from this process's environment to ``target``."""
        return cls.between(dict(os.environ), target)

    @classmethod
    def between(cls, current: Mapping[str, str], target: Mapping[str, str]) -> EnvironmentChanges:
        """The changes that turn ``current`` into ``target``."""
        return cls(
            remove=tuple(name for name in current if name not in target),
            assign={name: value for name, value in target.items() if current.get(name) != value},
        )

    def apply(self) -> None:
        """Makes ``os.environ`` the run's environment (HOME and TMPDIR are set after)."""
        for name in self.remove:
            del os.environ[name]
        for name, value in self.assign.items():
            os.environ[name] = value


@dataclass(frozen=True, slots=True)
class ChildStreams:
    """The run's ``sys.stdin/stdout/stderr``, built once in the zygote on fds 0-2 and never used there.

    Each child inherits pristine copies and only points fds 1 and 2 at its pipes, instead of
    looking up codecs and building three stream stacks per run.
    """

    stdin: io.TextIOWrapper
    stdout: io.TextIOWrapper
    stderr: io.TextIOWrapper
    # The zygote's own streams, kept referenced: replacing them in a child must not destroy them,
    # which would run their close and flush code (and copy the pages it touches) for nothing.
    replaced: tuple[object, ...] = ()

    @classmethod
    def prepare(cls) -> ChildStreams:
        """Builds the streams while fds 1 and 2 are a pipe, as in a child, so they know they cannot seek."""
        saved = os.dup(1), os.dup(2)
        read_end, write_end = os.pipe()
        try:
            os.dup2(write_end, 1)
            os.dup2(write_end, 2)
            return cls(
                stdin=io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8"),
                stdout=_text_stream(1, line_buffering=False),
                stderr=_text_stream(2, line_buffering=True),
                replaced=(sys.stdin, sys.stdout, sys.stderr, sys.__stdin__, sys.__stdout__, sys.__stderr__),
            )
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in (*saved, read_end, write_end):
                os.close(fd)


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """Everything the child needs, decided by the zygote before the fork."""

    code_fd: int
    stdout_fd: int
    stderr_fd: int
    status_fd: int
    preload_bytes: int
    run_dir: str
    run_root_mode: int  # what the run root's mode must be (a run of the service's uid may change it)
    environment: EnvironmentChanges
    streams: ChildStreams
    limits: RunLimits
    uid: int | None  # the run's own uid (service started as root), else None
    isolate_network: bool  # enter a network namespace of its own
    offline: bool  # the run asked for no network
    confinement: RunConfinement | None  # Landlock and seccomp; None: off
    # The run's dir, rlimits and online environment were set up before the run arrived (a spare,
    # runs without a uid of their own); ``environment`` then holds only what is left to change.
    entered: bool = False


def prepare_child() -> None:
    """What a child does before it knows its run: a session of its own, Python's default signal handling."""
    os.setsid()
    # Runs are batch work to the kernel: it slices them longer and lets them preempt the server
    # less, which costs fewer context switches when many runs compete for the cores.
    with contextlib.suppress(OSError):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    _restore_signals()


def enter_run_ahead(
    run_dir: str, root_mode: int, environment: EnvironmentChanges, limits: RunLimits, confinement: RunConfinement | None
) -> None:
    """What a spare can set up before its run arrives when runs have no uid of their own.

    Confinement too: the Landlock domain and the denylist cost ~0.2 ms (``bench/run --only layers``),
    off the run's path here.
    """
    make_own_dir(run_dir, root_mode)
    limits.apply(per_run_uid=False)
    _use_run_dir(run_dir, environment)
    if confinement is not None:
        confinement.enter(".")


def wait_as_spare(
    channel: socket.socket,
    spec_for: Callable[[bytes, list[int]], ChildSpec],
    ahead: Callable[[], None] | None = None,
) -> NoReturn:
    """Prepares this fresh child ahead of a run, waits for the zygote to hand one over, and runs it.

    ``ahead`` does what the run's parameters cannot change (see :func:`enter_run_ahead`). The zygote
    sends the run's fds and a few bytes on ``channel``; ``spec_for`` turns them into the run's
    spec. An empty read means the zygote is gone or retired this spare: exit quietly.
    """
    try:
        prepare_child()
        if ahead is not None:
            ahead()
        data, fds, _flags, _addr = socket.recv_fds(channel, 64, SPAWN_FDS)
        channel.close()
        if not data:
            os._exit(0)
        spec = spec_for(data, fds)
    except BaseException as exc:
        _report(f"sandbox: spare child failed: {type(exc).__name__}: {exc}\n")
        os._exit(EXIT_SETUP_FAILURE)
    run_child(spec, prepared=True)


def run_child(spec: ChildSpec, prepared: bool = False) -> NoReturn:
    """Runs one snippet in this fork child (``prepared`` when ``prepare_child`` already ran) and exits."""
    exit_code = EXIT_SETUP_FAILURE
    limit = 0
    run_pid = os.getpid()
    try:
        if not prepared:
            prepare_child()
        _wire_stdio(spec.stdout_fd, spec.stderr_fd, spec.streams)
        os.dup2(spec.status_fd, STATUS_FD, inheritable=False)
        _write_status(run_pid)
        payload = _read_all(spec.code_fd)
        if spec.isolate_network and not enter_network_namespace():
            raise OSError("cannot enter a network namespace")
        if spec.entered:
            spec.environment.apply()  # what differs from the online environment set up ahead
        else:
            if spec.uid is None:
                make_own_dir(spec.run_dir, spec.run_root_mode)
            else:
                _make_dir_for(spec.run_dir, spec.uid)
            spec.limits.apply(per_run_uid=spec.uid is not None)
            if spec.uid is not None:
                drop_privileges(spec.uid)
                os.chdir(spec.run_dir)
            _use_run_dir(spec.run_dir, spec.environment)
            if spec.confinement is not None:
                spec.confinement.enter(".")  # through the working dir: see make_own_dir
        if spec.offline and spec.confinement is not None:
            spec.confinement.go_offline()
        # Last, once the confinement's own fds have been used: nothing of the zygote's stays open.
        os.closerange(STATUS_FD + 1, os.sysconf("SC_OPEN_MAX"))
        preload = payload[: spec.preload_bytes].decode("utf-8", "surrogatepass")
        code = payload[spec.preload_bytes :].decode("utf-8", "surrogatepass")
        main_module = fresh_main_module()
        sys.modules["__main__"] = main_module
        outcome = run_snippet(code, preload, main_module, sys.stderr)
        exit_code, limit = outcome.code, outcome.limit
        _wait_for_threads()
    except BaseException as exc:
        _report(f"sandbox: run setup failed: {type(exc).__name__}: {exc}\n")
    finally:
        _flush(sys.stdout)
        _flush(sys.stderr)
        # A process forked by the snippet unwinds through here too; only the run's leader reports.
        if os.getpid() == run_pid:
            _report_and_end(exit_code, limit, spec)
        os._exit(exit_code)


def _write_status(value: int) -> None:
    with contextlib.suppress(OSError):
        os.write(STATUS_FD, STATUS.pack(value))


def _report_and_end(exit_code: int, limit: int, spec: ChildSpec) -> None:
    """Kills what the run started (with a uid of its own), reports, closes its pipes, removes its dir.

    With a uid of its own, the run's leftovers are every other process of that uid, wherever they
    went (``kill(-1)`` as that uid). The worker answers once the report and the EOFs arrive, while
    this process cleans up and the kernel tears it down; the zygote then kills what is left of the
    group as it reaps. Doing the cleanup here keeps it off the single-threaded zygote.
    """
    if spec.uid is not None and os.getuid() == spec.uid:  # never as root: kill(-1) would end every process
        with contextlib.suppress(OSError):
            os.kill(-1, signal.SIGKILL)
    _write_status(exit_code)
    _write_status(limit)
    for fd in (1, 2, STATUS_FD):
        with contextlib.suppress(OSError):
            os.close(fd)
    with contextlib.suppress(OSError):
        os.chdir("/")
    # Its contents only: a confined run cannot remove its dir's own entry; the zygote does.
    with contextlib.suppress(OSError):
        for entry in os.scandir(spec.run_dir):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)


def _restore_signals() -> None:
    # The zygote's wakeup fd and handlers must not fire in user code; Python's own defaults return.
    # The C-level functions: signal.signal's enum conversion of the old handler costs a raised
    # ValueError per call, and every object it touches is a page the child must copy.
    _signal.set_wakeup_fd(-1)
    for signum in _DEFAULT_SIGNALS:
        _signal.signal(signum, _signal.SIG_DFL)
    _signal.signal(signal.SIGINT, _signal.default_int_handler)
    _signal.signal(signal.SIGPIPE, _signal.SIG_IGN)


def _text_stream(fd: int, line_buffering: bool) -> io.TextIOWrapper:
    # UTF-8 whatever the locale; unencodable text is escaped rather than failing the print.
    raw = io.FileIO(fd, "w", closefd=False)
    buffered = io.BufferedWriter(raw)
    return io.TextIOWrapper(buffered, encoding="utf-8", errors="backslashreplace", line_buffering=line_buffering)


def _wire_stdio(stdout_fd: int, stderr_fd: int, streams: ChildStreams) -> None:
    # fd 0 is already /dev/null: the zygote's, inherited.
    os.dup2(stdout_fd, 1)
    os.dup2(stderr_fd, 2)
    sys.stdin, sys.stdout, sys.stderr = streams.stdin, streams.stdout, streams.stderr
    # Libraries that write to the "original" streams must reach the run's pipes too.
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr  # type: ignore[misc]


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, _READ_CHUNK):
        chunks.append(chunk)
    return b"".join(chunks)


def _make_dir_for(run_dir: str, uid: int) -> None:
    # As root, before it becomes the run's uid: no mode of the root stops it.
    os.mkdir(run_dir, 0o700)
    os.chown(run_dir, uid, uid)


def _use_run_dir(run_dir: str, environment: EnvironmentChanges) -> None:
    """The run's environment, with its home, temp and cache dirs in its (working) dir."""
    environment.apply()
    os.environ["HOME"] = os.environ["TMPDIR"] = run_dir
    # Caches that libraries keep (matplotlib's font list, pip's, ...) go where the run may write.
    os.environ["XDG_CACHE_HOME"] = os.environ["MPLCONFIGDIR"] = run_dir
    tempfile.tempdir = run_dir
    sys.argv = [""]


def _wait_for_threads() -> None:
    # A script's interpreter waits for its non-daemon threads (and runs their atexit hooks) before
    # it exits; os._exit would cut them off. threading._shutdown is how CPython itself does it;
    # with no thread but this one there is nothing to wait for.
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None and threading.active_count() > 1:
        shutdown()


def _flush(stream: TextIO) -> None:
    # The snippet may have closed or broken its own stream; then there is nothing left to save.
    with contextlib.suppress(OSError, ValueError):
        stream.flush()


def _report(message: str) -> None:
    with contextlib.suppress(OSError):
        os.write(2, message.encode("utf-8", "backslashreplace"))

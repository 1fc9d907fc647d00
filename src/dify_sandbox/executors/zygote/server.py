"""The zygote: a single-threaded process that imports the common modules once and forks a child per run.

It is started as a fresh interpreter (``python -m dify_sandbox.executors.zygote``) by one server
worker, reads its configuration as JSON on stdin, and then serves frames (see ``protocol.py``)
on the socket it inherited. SIGCHLD reaches the loop through ``signal.set_wakeup_fd``; a child's
exit is seen with ``WNOWAIT`` first so its process group can be killed while the group id is
still held, then reaped. The zygote exits when its worker closes the socket, killing every run.
Its log events are JSON lines on stderr, which the worker re-logs.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from dify_sandbox._prctl import become_subreaper, forbid_inspection
from dify_sandbox._procfs import kill_group
from dify_sandbox.confinement.enforce import RunConfinement
from dify_sandbox.confinement.policy import Confinement
from dify_sandbox.executors._rlimits import RunLimits
from dify_sandbox.executors._run_root import RunRoot
from dify_sandbox.executors.zygote import protocol
from dify_sandbox.executors.zygote._fork import fork
from dify_sandbox.executors.zygote.child import (
    ChildSpec,
    ChildStreams,
    EnvironmentChanges,
    enter_run_ahead,
    run_child,
    wait_as_spare,
)
from dify_sandbox.executors.zygote.isolation import (
    Isolation,
    now_ticks,
    orphans,
    probe_network_namespace,
    unreadable_for,
)
from dify_sandbox.executors.zygote.preload import pinned_thread_counts, preload_modules, reexec_without, task_count
from dify_sandbox.executors.zygote.protocol import FLAG_NETWORK, FRAME_BYTES, SPAWN_FDS, Frame, Op, spawn_uid
from dify_sandbox.run_uids import kill_uids

__all__ = ["ZygoteConfig", "ZygoteServer", "main"]

# Orphans are looked for after a reap, at most this often (seconds).
SWEEP_INTERVAL = 0.05
# A spare that dies before its run (its set-up failed) is replaced after a pause that doubles each
# time, up to the maximum, so a broken set-up does not become a fork loop (seconds).
SPARE_BACKOFF_FIRST = 0.01
SPARE_BACKOFF_MAX = 1.0
# What the zygote tells a spare along with the run's fds: uid (-1: none), flags, preload length.
HANDOFF = struct.Struct("!iii")


@dataclass(frozen=True, slots=True)
class ZygoteConfig:
    """What the worker tells the zygote at start (as JSON on stdin)."""

    socket_fd: int
    run_root: str
    preload_modules: list[str] = field(default_factory=list)
    package_paths: list[str] = field(default_factory=list)  # the package dir, after the service's site-packages
    skip_modules: list[str] = field(default_factory=list)  # left threads running when preloaded
    document: dict[str, Any] = field(default_factory=dict)  # as read, to start afresh without a module
    env_online: dict[str, str] = field(default_factory=dict)
    env_offline: dict[str, str] = field(default_factory=dict)
    limits: RunLimits = field(default_factory=RunLimits)
    uid_range: tuple[int, int] | None = None  # the worker's per-run uids; only when the zygote runs as root
    confinement: Confinement | None = None  # Landlock and seccomp for every run; None: off

    @classmethod
    def from_json(cls, text: str) -> ZygoteConfig:
        """Parses the start-up document written by the worker."""
        data = json.loads(text)
        uid_range = data.get("uid_range")
        return cls(
            socket_fd=int(data["socket_fd"]),
            run_root=str(data["run_root"]),
            preload_modules=[str(name) for name in data.get("preload_modules", [])],
            package_paths=[str(path) for path in data.get("package_paths", [])],
            skip_modules=[str(name) for name in data.get("skip_modules", [])],
            document=data,
            env_online={str(k): str(v) for k, v in data.get("env_online", {}).items()},
            env_offline={str(k): str(v) for k, v in data.get("env_offline", {}).items()},
            limits=RunLimits.from_dict(data.get("limits", {})),
            uid_range=(int(uid_range[0]), int(uid_range[1])) if uid_range else None,
            confinement=Confinement.from_dict(data["confinement"]) if data.get("confinement") else None,
        )


@dataclass(slots=True)
class _Spare:
    """A child forked ahead of time, prepared and blocked on its channel until a run is handed to it."""

    pid: int
    channel: socket.socket


@dataclass(slots=True)
class _RunState:
    """What the zygote remembers of a run until it has reaped it and cleaned up after it."""

    run_id: int
    uid: int | None
    started: int  # boot-clock ticks, to tell which orphans a live run may have started


def log(event: str, level: str = "info", **fields: Any) -> None:
    """Writes one JSON log line to stderr for the worker to re-log."""
    line = json.dumps({"event": event, "level": level, **fields}, default=str)
    with contextlib.suppress(OSError):
        os.write(2, (line + "\n").encode())


class ZygoteServer:
    """The zygote's loop: spawn on request, reap on SIGCHLD, report exits."""

    def __init__(self, config: ZygoteConfig) -> None:
        self.config = config
        self.sock = socket.socket(fileno=config.socket_fd)
        self.sock.setblocking(True)
        self.runs: dict[int, _RunState] = {}  # pid -> state
        self.pids: dict[int, int] = {}  # run id -> pid
        self.poller = select.epoll()
        self.stopping = False
        self.wakeup_fd = -1
        self.last_sweep = 0.0
        self.sweep_pending = False
        self.spare: _Spare | None = None
        self.per_run_uids = config.uid_range is not None  # the worker picks each run's uid
        self.isolation = Isolation(per_run_uids=False, network_namespace=False, subreaper=False)
        self.env_online = EnvironmentChanges.towards(config.env_online)
        self.env_offline = EnvironmentChanges.towards(config.env_offline)
        # For a spare that set up the online environment ahead: what an offline run changes from it.
        self.online_to_offline = EnvironmentChanges.between(config.env_online, config.env_offline)
        self.no_change = EnvironmentChanges(remove=(), assign={})
        self.streams = ChildStreams.prepare()
        self.confinement = RunConfinement(config.confinement) if config.confinement is not None else None
        self.run_dirs = RunRoot(config.run_root, _log_restored)
        self.spare_failures = 0  # spares in a row that died before their run
        self.spare_due = 0.0  # monotonic time before which no spare is forked (backoff)

    def preload(self) -> int:
        """Imports the configured modules once, thread counts pinned to 1; one that fails is logged and skipped.

        One that leaves a thread running makes the zygote start afresh without it (see ``preload.py``).
        """
        wanted = [name for name in self.config.preload_modules if name not in self.config.skip_modules]
        with pinned_thread_counts() as saved:
            loaded, threaded = preload_modules(wanted, self.config.package_paths, log)
            if threaded is not None:
                log(
                    "Preload module left threads running; it is not preloaded (runs import it themselves)",
                    "warning",
                    module=threaded,
                    threads=task_count(),
                )
                reexec_without(self.config.document, threaded, saved)
        return loaded

    def serve(self) -> None:
        """Runs until the worker closes the socket or SIGTERM arrives."""
        loaded = self.preload()
        if self.config.uid_range is not None:
            problem = unreadable_for(self.config.uid_range[0])
            if problem is not None:
                log("Per-run users disabled: Python is not readable by them", "warning", path=problem)
                self.per_run_uids = False
        self.run_dirs.create(self.per_run_uids)
        if self.confinement is not None:
            RunConfinement.prepare_process()  # no_new_privs, inherited by every child
        self.isolation = Isolation(
            per_run_uids=self.per_run_uids,
            # Without the syscall filter's offline rules, an offline run needs a namespace of its own.
            network_namespace=not (self.confinement and self.confinement.closes_network) and probe_network_namespace(),
            subreaper=become_subreaper(),
        )
        wakeup_r, wakeup_w = os.pipe()
        os.set_blocking(wakeup_w, False)
        os.set_blocking(wakeup_r, False)
        signal.set_wakeup_fd(wakeup_w)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            # Handlers do nothing: the wakeup fd carries the signal number to the loop.
            signal.signal(signum, lambda *_: None)
        self.wakeup_fd = wakeup_r
        self.poller.register(self.sock.fileno(), select.EPOLLIN)
        self.poller.register(wakeup_r, select.EPOLLIN)
        # Objects that exist now are shared by every child; freezing keeps the GC off their pages.
        gc.collect()
        gc.freeze()
        self.fork_spare()  # before READY: the first run finds its child waiting
        self.send(Frame(Op.READY, run_id=self.isolation.to_bits(), value=os.getpid(), aux=loaded))
        log(
            protocol.READY_EVENT,
            preloaded_modules=loaded,
            threads=task_count(),
            per_run_uids=self.isolation.per_run_uids,
            network_namespace=self.isolation.network_namespace,
            orphan_sweep=self.isolation.subreaper,
        )
        sock_fd = self.sock.fileno()
        try:
            while not self.stopping:
                if self.spare is None and time.monotonic() >= self.spare_due:
                    self.fork_spare()
                for fd, _ in self.poller.poll(self.poll_timeout()):
                    if fd == sock_fd:
                        self.handle_frame()
                    else:
                        self.handle_signals()
                if self.sweep_pending and time.monotonic() - self.last_sweep >= SWEEP_INTERVAL:
                    self.sweep_orphans()
        finally:
            self.close()

    def poll_timeout(self) -> float:
        """How long the loop may sleep: until the pending orphan sweep or the next spare is due, else until an event."""
        due = []
        if self.sweep_pending:
            due.append(self.last_sweep + SWEEP_INTERVAL)
        if self.spare is None:
            due.append(self.spare_due)
        return max(0.0, min(due) - time.monotonic()) if due else -1

    def handle_frame(self) -> None:
        """Reads one request frame (with its fds) from the worker."""
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.sock, FRAME_BYTES, SPAWN_FDS)
        except ConnectionError:
            data, fds = b"", []
        if not data:
            self.stopping = True
            return
        frame = Frame.unpack(data)
        if frame.op == Op.SPAWN:
            self.spawn(frame, fds)
            return
        for fd in fds:
            os.close(fd)
        if frame.op == Op.KILL:
            pid = self.pids.get(frame.run_id)
            if pid is not None:
                kill_group(pid)
        elif frame.op == Op.PING:
            self.send(Frame(Op.PONG, value=frame.value))
        else:
            log("Unknown frame", "warning", op=frame.op.decode(errors="replace"))

    def spawn(self, frame: Frame, fds: list[int]) -> None:
        """Starts the child of one run: the spare when there is one, else a fresh fork (the child reports its pid)."""
        if len(fds) != SPAWN_FDS:
            _close_all(fds)
            self.send(Frame(Op.FAILED, frame.run_id, aux=errno.EBADF))
            return
        flags, uid = spawn_uid(frame.value)
        if uid is not None and not (self.per_run_uids and _within(uid, self.config.uid_range)):
            _close_all(fds)
            log("Run uid refused", "error", uid=uid)
            self.send(Frame(Op.FAILED, frame.run_id, aux=errno.EPERM))
            return
        started = now_ticks()
        pid = self.hand_to_spare(fds, uid, flags, frame.aux)
        if pid is None:
            self.run_dirs.restore_mode()  # a run may have changed it: the child makes its dir there
            try:
                pid = fork()
            except OSError as exc:
                _close_all(fds)
                log("Fork failed", "error", error=str(exc))
                self.send(Frame(Op.FAILED, frame.run_id, aux=exc.errno or 0))
                return
            if pid == 0:
                run_child(self.child_spec(fds, uid, flags, frame.aux))
        _close_all(fds)
        self.runs[pid] = _RunState(frame.run_id, uid, started)
        self.pids[frame.run_id] = pid

    def child_spec(
        self, fds: list[int], uid: int | None, flags: int, preload_bytes: int, entered: bool = False
    ) -> ChildSpec:
        """The spec of a run, in the child that runs it (``entered``: set up ahead, see ``enter_run_ahead``)."""
        code_fd, stdout_fd, stderr_fd, status_fd = fds
        network = bool(flags & FLAG_NETWORK)
        if entered:
            environment = self.no_change if network else self.online_to_offline
        else:
            environment = self.env_online if network else self.env_offline
        return ChildSpec(
            code_fd=code_fd,
            stdout_fd=stdout_fd,
            stderr_fd=stderr_fd,
            status_fd=status_fd,
            preload_bytes=preload_bytes,
            run_dir=self.run_dirs.path(os.getpid()),
            run_root_mode=self.run_dirs.mode,
            environment=environment,
            streams=self.streams,
            limits=self.config.limits,
            uid=uid,
            isolate_network=not network and self.isolation.network_namespace,
            offline=not network,
            confinement=self.confinement,
            entered=entered,
        )

    def fork_spare(self) -> None:
        """Forks the next run's child ahead of time, so a run does not wait for ``fork``."""
        self.run_dirs.restore_mode()  # a run may have changed it: the child makes its dir there
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid = fork()
        except OSError as exc:
            ours.close()
            theirs.close()
            log("Fork of a spare child failed", "warning", error=str(exc))
            return
        if pid == 0:
            ours.close()
            wait_as_spare(theirs, self.spec_from_handoff, None if self.per_run_uids else self.enter_run_ahead)
        theirs.close()
        self.spare = _Spare(pid, ours)

    def enter_run_ahead(self) -> None:
        """In a spare, when runs have no uid of their own: its dir, rlimits and the online environment."""
        enter_run_ahead(
            self.run_dirs.path(os.getpid()), self.run_dirs.mode, self.env_online, self.config.limits, self.confinement
        )

    def spec_from_handoff(self, data: bytes, fds: list[int]) -> ChildSpec:
        """In a spare: the run's spec from what the zygote sent."""
        uid, flags, preload_bytes = HANDOFF.unpack(data)
        if len(fds) != SPAWN_FDS:
            raise OSError(errno.EBADF, f"{len(fds)} fds handed over, expected {SPAWN_FDS}")
        return self.child_spec(fds, None if uid < 0 else uid, flags, preload_bytes, entered=not self.per_run_uids)

    def hand_to_spare(self, fds: list[int], uid: int | None, flags: int, preload_bytes: int) -> int | None:
        """Gives a run to the spare child; its pid, or None when there is no spare to take it."""
        spare, self.spare = self.spare, None
        if spare is None:
            return None
        try:
            socket.send_fds(spare.channel, [HANDOFF.pack(-1 if uid is None else uid, flags, preload_bytes)], fds)
        except OSError as exc:
            log("Spare child did not take the run", "warning", error=str(exc), pid=spare.pid)
            _kill(spare.pid)  # reaped like any child; its group may not exist yet
            return None
        finally:
            spare.channel.close()
        self.spare_failures = 0
        return spare.pid

    def handle_signals(self) -> None:
        """Drains the wakeup fd: SIGCHLD reaps, SIGTERM/SIGINT stop the loop."""
        with contextlib.suppress(BlockingIOError):
            for signum in os.read(self.wakeup_fd, 512):
                if signum in (signal.SIGTERM, signal.SIGINT):
                    self.stopping = True
        self.reap()

    def reap(self) -> None:
        """Reaps every exited child (a run's group is killed before its leader is reaped); asks for an orphan sweep.

        The sweep reads ``/proc``; under load it runs at most every ``SWEEP_INTERVAL``, not after every run.
        """
        self._reap_exited()
        if time.monotonic() - self.last_sweep >= SWEEP_INTERVAL:
            self.sweep_orphans()
        else:
            self.sweep_pending = True

    def sweep_orphans(self) -> None:
        """Kills processes that left their run's group and were reparented here, once their run is over.

        An orphan is killed when it is older than every run still in flight: no live run can have
        started it. (Checked after every reap, so an orphan whose own parent is killed here is
        found on the next pass, however many sessions deep it went.)
        """
        self.last_sweep = time.monotonic()
        self.sweep_pending = False
        oldest_live = min((run.started for run in self.runs.values()), default=None)
        known = set(self.runs)
        if self.spare is not None:
            known.add(self.spare.pid)
        for orphan, started in orphans(known):
            if oldest_live is None or started < oldest_live:
                kill_group(orphan)
                _kill(orphan)

    def _reap_exited(self) -> None:
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid == 0:
                return
            pid = info.si_pid
            if self.spare is not None and pid == self.spare.pid:
                self.spare.channel.close()
                self.spare = None
                self.spare_failures += 1
                self.spare_due = time.monotonic() + min(
                    SPARE_BACKOFF_FIRST * 2 ** (self.spare_failures - 1), SPARE_BACKOFF_MAX
                )
            run = self.runs.pop(pid, None)
            if run is not None:
                # The zombie leader still holds the group id, so this cannot hit a recycled group.
                kill_group(pid)
            _, status = os.waitpid(pid, 0)
            if run is not None:
                self.clean_up_after(pid, run, status)
            else:
                self.run_dirs.remove(pid)  # a spare that died before its run may have made its dir ahead

    def clean_up_after(self, pid: int, run: _RunState, status: int) -> None:
        """Kills what the run left outside its group, frees its uid and dir, reports the exit."""
        del self.pids[run.run_id]
        if run.uid is not None:
            # The child usually killed its uid's other processes itself, but a crash or os._exit
            # skips that, and the worker reuses a uid as soon as this frame reports the exit.
            kill_uids(run.uid, run.uid)
        self.run_dirs.remove(pid)
        self.send(Frame(Op.EXITED, run.run_id, value=pid, aux=status))

    def send(self, frame: Frame) -> None:
        """Sends one frame to the worker; a worker that is gone stops the loop."""
        try:
            self.sock.send(frame.pack())
        except OSError:
            self.stopping = True

    def close(self) -> None:
        """Kills every run and the spare, reaps what it can, removes the run dirs."""
        if self.spare is not None:
            self.spare.channel.close()
            _kill(self.spare.pid)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.spare.pid, 0)
            self.spare = None
        for pid in list(self.runs):
            kill_group(pid)
        deadline = time.monotonic() + 2.0
        while self.runs and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.01)
        self.run_dirs.remove_all()
        log("Zygote stopped", runs_left=len(self.runs))


def _log_restored(path: str) -> None:
    log("A run changed the run root's mode; restored", "warning", path=path)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _within(uid: int, uid_range: tuple[int, int] | None) -> bool:
    return uid_range is not None and uid_range[0] <= uid <= uid_range[1]


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def main(stdin_text: str | None = None) -> None:
    """Entry point of the zygote process."""
    # Before anything else: no other process of our uid may read this one's memory or fds.
    forbid_inspection()
    config = ZygoteConfig.from_json(stdin_text if stdin_text is not None else sys.stdin.read())
    # Whatever the worker's process had open besides the socket (a listener, say) is not ours to keep.
    os.closerange(3, config.socket_fd)
    os.closerange(config.socket_fd + 1, os.sysconf("SC_OPEN_MAX"))
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    ZygoteServer(config).serve()

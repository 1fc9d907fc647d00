"""Signals: a run cannot stop or kill the service's processes, nor another run."""

from __future__ import annotations

import contextlib
import os

import psutil
import pytest

from .attacks import LANGUAGES, snippet

pytestmark = pytest.mark.integration

SIGNAL_SERVICE_PY = """\
import signal

for role, pid in ARGS["stop"]:
    if pid != os.getpid():
        attempt(f"SIGSTOP to the {role} {pid}", lambda: os.kill(pid, signal.SIGSTOP) or "delivered")
for group in ARGS["groups"]:
    if group != os.getpgrp():
        attempt(f"SIGSTOP to process group {group}", lambda: os.killpg(group, signal.SIGSTOP) or "delivered")
attempt("SIGTERM to the supervisor", lambda: os.kill(ARGS["supervisor"], signal.SIGTERM) or "delivered")
"""

SIGNAL_SERVICE_JS = """\
function signal(pid, name) {
  process.kill(pid, name);
  return 'delivered';
}
for (const [role, pid] of ARGS.stop) {
  if (pid !== process.pid) attempt(`SIGSTOP to the ${role} ${pid}`, () => signal(pid, 'SIGSTOP'));
}
// A pooled node process leads its own group.
for (const group of ARGS.groups) {
  if (group !== process.pid) attempt(`SIGSTOP to process group ${group}`, () => signal(-group, 'SIGSTOP'));
}
attempt('SIGTERM to the supervisor', () => signal(ARGS.supervisor, 'SIGTERM'));
"""

SIGNAL_VICTIM_PY = """\
import signal

pid = ARGS["victim"]
attempt("SIGSTOP to the victim", lambda: os.kill(pid, signal.SIGSTOP) or "delivered")
attempt("SIGUSR2 to the victim (ends its wait early)", lambda: os.kill(pid, signal.SIGUSR2) or "delivered")
attempt("SIGTERM to the victim", lambda: os.kill(pid, signal.SIGTERM) or "delivered")
attempt("SIGKILL to the victim's process group", lambda: os.killpg(pid, signal.SIGKILL) or "delivered")
"""

SIGNAL_VICTIM_JS = """\
function signal(pid, name) {
  process.kill(pid, name);
  return 'delivered';
}
attempt('SIGSTOP to the victim', () => signal(ARGS.victim, 'SIGSTOP'));
attempt('SIGUSR2 to the victim (ends its wait early)', () => signal(ARGS.victim, 'SIGUSR2'));
attempt('SIGTERM to the victim', () => signal(ARGS.victim, 'SIGTERM'));
attempt("SIGKILL to the victim's process group", () => signal(-ARGS.victim, 'SIGKILL'));
"""


def _groups(pids: list[int]) -> list[int]:
    groups = set()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            groups.add(os.getpgid(pid))
    return sorted(groups)


def _status(pid: int) -> str:
    """The process's state as the tests need it: running (or sleeping), stopped, or gone."""
    try:
        status = psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return "gone"
    if status == psutil.STATUS_ZOMBIE:
        return "gone"
    return "stopped" if status in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP) else "running"


@pytest.mark.parametrize("language", LANGUAGES)
def test_service_processes_cannot_be_signalled(sandbox, language):
    """Scenario: a run signals every process of the service.

    1. Find the supervisor, workers, resource tracker, zygotes, spares and idle node processes.
    2. The run sends SIGSTOP to each of them and to each of their process groups, then SIGTERM to the supervisor.
    3. Every signal is refused (EPERM; ESRCH only for a process that has just been replaced).
    4. The supervisor is the same live process, nothing of the service is stopped, /health answers
       within 1 s and both runtimes still run.
    """
    roles = sandbox.settle()
    stop = roles.targets("workers", "trackers", "zygotes", "spares", "nodes")
    groups = _groups([roles.supervisor, *(pid for _, pid in stop)])
    code = snippet(
        language, SIGNAL_SERVICE_PY, SIGNAL_SERVICE_JS, stop=stop, groups=groups, supervisor=roles.supervisor
    )
    report = sandbox.attack(code, language=language)
    assert sandbox.server.proc.poll() is None, f"the supervisor exited:\n{report}"
    assert not sandbox.stopped(), f"stopped: {sandbox.stopped()}\n{report}"
    # Each list holds the attacker's own spare or node process once, which it skips.
    report.assert_blocked(at_least=len(stop) - 1 + len(groups) - 1 + 1, only=("EPERM", "ESRCH"))
    sandbox.assert_unharmed()


@pytest.mark.parametrize(
    ("attacker", "victim_language"),
    [("python3", "python3"), ("nodejs", "python3"), ("python3", "nodejs")],
)
def test_another_run_cannot_be_signalled(sandbox, victim, attacker, victim_language):
    """Scenario: a run signals a concurrent run.

    1. A victim run starts, holds a secret and waits for the test's SIGUSR2.
    2. The attacker sends it SIGSTOP, SIGUSR2, SIGTERM, and SIGKILL to its process group: all refused (EPERM).
    3. The victim is not stopped, and once released prints exactly what it would have alone.
    """
    target = victim(victim_language)
    code = snippet(attacker, SIGNAL_VICTIM_PY, SIGNAL_VICTIM_JS, victim=target.pid)
    report = sandbox.attack(code, language=attacker)
    assert _status(target.pid) == "running", f"the victim is {_status(target.pid)}:\n{report}"
    report.assert_blocked(at_least=4, only=("EPERM",))
    target.assert_unharmed()
    sandbox.assert_unharmed()

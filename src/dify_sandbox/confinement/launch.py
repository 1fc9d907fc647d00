"""Starts a program (``node``) confined as a run: ``no_new_privs``, its Landlock domain and seccomp, then ``exec``.

A server worker cannot confine a process it starts with ``vfork`` (there is no hook between fork
and exec), and confining the worker itself is not an option, so it starts this launcher instead::

    python -I -S -c 'import sys; sys.path.insert(0, ROOT); from dify_sandbox.confinement.launch import main; main()' \
        PLAN_JSON NETWORK UID PROGRAM [ARGS...]

It is started in the run's own dir and confines the program to it, opened as ``.``: a run root
whose mode a concurrent run has just taken away cannot stop a process that is already inside
its dir. With a ``UID`` (the service runs as root) it becomes that user first, for good. ``-I -S``: no site,
no user paths, no environment; only the standard library and this package's ``confinement``
modules are imported. Landlock domains and seccomp filters survive ``exec``, so the
program and everything it starts stay confined. The launcher also makes the program a child
subreaper (kept across ``exec``): what the run detaches from itself stays the program's child while
the run lives, and becomes the server worker's child when it ends, where the node pool finds it.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from pathlib import Path

from dify_sandbox.confinement.enforce import RunConfinement
from dify_sandbox.confinement.policy import Confinement

__all__ = ["EXIT_LAUNCH_FAILURE", "launcher_argv", "main"]

EXIT_LAUNCH_FAILURE = 70  # sysexits' EX_SOFTWARE
_PR_SET_CHILD_SUBREAPER = 36
OWN_DIR = "."  # the working dir it is started in
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_BOOT = f"import sys; sys.path.insert(0, {_PACKAGE_ROOT!r}); from dify_sandbox.confinement.launch import main; main()"


def launcher_argv(plan: Confinement | None, network: bool, uid: int | None, argv: list[str]) -> list[str]:
    """The command line that starts ``argv`` as ``uid`` (None: as we are), confined by ``plan`` to its working dir."""
    spec = json.dumps(plan.to_dict() if plan is not None else None, separators=(",", ":"))
    user = "-" if uid is None else str(uid)
    return [sys.executable, "-I", "-S", "-c", _BOOT, spec, "1" if network else "0", user, *argv]


def main() -> None:
    """Entry point: confine, then become the program; any failure exits before the program runs."""
    try:
        spec, network, user, *argv = sys.argv[1:]
        plan = json.loads(spec)
        confinement = RunConfinement(Confinement.from_dict(plan)) if plan is not None else None
        if user != "-":
            uid = int(user)
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        if confinement is not None:
            RunConfinement.prepare_process()
            confinement.enter(OWN_DIR)
            if network != "1":
                confinement.go_offline()
        # libc through the executable's own symbols: ctypes.util.find_library would start programs.
        ctypes.CDLL(None).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        os.execv(argv[0], argv)
    except Exception as exc:
        os.write(2, f"sandbox: cannot start the run confined: {type(exc).__name__}: {exc}\n".encode())
        os._exit(EXIT_LAUNCH_FAILURE)

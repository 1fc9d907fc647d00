"""Hostile snippets: the helpers they start with, the victim run, and how their reports are read.

A snippet gets its parameters as `ARGS` (JSON, from the test) and reports every attempt on a line of
its own: `BLOCKED <what>: <errno name>` when the attempt failed with an OS error, `LEAK <what>: <what it
got>` when it worked. Any other exception is a bug in the snippet: the run ends with a traceback and a
non-zero exit code, and the test fails on that rather than counting it as blocked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["LANGUAGES", "Report", "node_snippet", "python_snippet", "snippet", "victim_snippet"]

LANGUAGES = ("python3", "nodejs")

_PYTHON_PRELUDE = '''\
import errno as _errno
import os
import sys


def attempt(what, action):
    """Runs action(): BLOCKED with the errno name if it raises OSError, else LEAK with what it returned."""
    try:
        result = action()
    except OSError as exc:
        # urllib's URLError carries the socket's error as its reason.
        number = exc.errno if exc.errno is not None else getattr(getattr(exc, "reason", None), "errno", None)
        print(f"BLOCKED {what}: {_errno.errorcode.get(number, type(exc).__name__)}", flush=True)
        return None
    print(f"LEAK {what}: {str(result)[:300]!r}", flush=True)
    return result
'''

# Raw syscalls through libc, for what Python has no function for (x86_64 numbers in the snippets).
_PYTHON_SYSCALL = '''
import ctypes

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def syscall(number, *args):
    """syscall(2): ints, bytes and ctypes objects (passed by address); raises OSError on -1."""
    converted = []
    for arg in args:
        if isinstance(arg, int):
            converted.append(ctypes.c_long(arg))
        elif isinstance(arg, bytes):
            converted.append(ctypes.c_char_p(arg))
        else:
            converted.append(ctypes.c_long(ctypes.addressof(arg)))
    result = _libc.syscall(ctypes.c_long(number), *converted)
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result
'''

_NODE_PRELUDE = """\
'use strict';
const fs = require('fs');

function show(value) {
  return JSON.stringify(String(value)).slice(0, 300);
}

// A system error (EACCES, EPERM, MODULE_NOT_FOUND...), not a bug in the snippet (ERR_INVALID_ARG_TYPE...).
function refused(error) {
  return Boolean(error) && typeof error.code === 'string' && !error.code.startsWith('ERR_');
}

// Runs action(): BLOCKED with the error code if it throws a system error, else LEAK with its result.
function attempt(what, action) {
  let result;
  try {
    result = action();
  } catch (error) {
    if (refused(error)) {
      console.log(`BLOCKED ${what}: ${error.code}`);
      return undefined;
    }
    throw error;
  }
  console.log(`LEAK ${what}: ${show(result)}`);
  return result;
}

// The same for a promise; no answer within timeoutMs counts as blocked (TIMEOUT).
async function attemptAsync(what, action, timeoutMs = 2000) {
  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(() => resolve(attemptAsync.TIMEOUT), timeoutMs);
  });
  try {
    const result = await Promise.race([action(), timeout]);
    if (result === attemptAsync.TIMEOUT) {
      console.log(`BLOCKED ${what}: TIMEOUT`);
      return undefined;
    }
    console.log(`LEAK ${what}: ${show(result)}`);
    return result;
  } catch (error) {
    if (refused(error)) {
      console.log(`BLOCKED ${what}: ${error.code}`);
      return undefined;
    }
    throw error;
  } finally {
    clearTimeout(timer);
  }
}
attemptAsync.TIMEOUT = Symbol('timeout');
"""


def python_snippet(body: str, *, syscalls: bool = False, **args: Any) -> str:
    """A Python snippet: the helpers, `ARGS = args`, then `body`."""
    helpers = _PYTHON_PRELUDE + (_PYTHON_SYSCALL if syscalls else "")
    return f"{helpers}\nimport json as _json\nARGS = _json.loads({json.dumps(args)!r})\n\n{body}"


def node_snippet(body: str, **args: Any) -> str:
    """A Node.js snippet: the helpers, `const ARGS = args`, then `body`."""
    return f"{_NODE_PRELUDE}\nconst ARGS = {json.dumps(args)};\n\n{body}"


def snippet(language: str, python: str, node: str, *, syscalls: bool = False, **args: Any) -> str:
    """The `python` body for python3 or the `node` body for nodejs, with the helpers and `ARGS`."""
    if language == "python3":
        return python_snippet(python, syscalls=syscalls, **args)
    return node_snippet(node, **args)


# A run that holds a secret (in memory and in `secret.txt` in its own dir), listens on an abstract unix
# socket, and waits for SIGUSR2 from the test (8 s at most). Its whole stdout is then
# `VICTIM OK <secret>`; anything an attacker changed (the file, a connection, a signal) shows up there.
_PYTHON_VICTIM = """\
import signal
import socket

SECRET = ARGS["secret"]
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind("\\0" + ARGS["socket"])
listener.listen()
listener.setblocking(False)
with open("secret.txt", "w") as file:
    file.write(SECRET)
woken = signal.sigtimedwait({signal.SIGUSR2}, 8)
if woken is None:
    how = "TIMEOUT"
else:
    how = "OK" if woken.si_pid == ARGS["waker"] else f"WOKEN BY {woken.si_pid}"
try:
    listener.accept()
    print("VICTIM REACHED on its abstract socket")
except BlockingIOError:
    pass
with open("secret.txt") as file:
    print("VICTIM", how, file.read())
"""

_NODE_VICTIM = """\
const net = require('net');
const SECRET = ARGS.secret;
let reached = false;
const timer = setTimeout(() => finish('TIMEOUT'), 8000);
process.on('SIGUSR2', () => finish('OK'));
const listener = net.createServer((connection) => {
  reached = true;
  connection.destroy();
});
listener.on('error', (error) => {
  console.log(`VICTIM cannot listen: ${error.code}`);
  fs.writeFileSync('secret.txt', SECRET);
});
listener.listen('\\0' + ARGS.socket, () => fs.writeFileSync('secret.txt', SECRET));

function finish(how) {
  clearTimeout(timer);
  if (reached) console.log('VICTIM REACHED on its abstract socket');
  console.log(`VICTIM ${how} ${fs.readFileSync('secret.txt', 'utf8')}`);
  listener.close();
}
"""


def victim_snippet(language: str, secret: str, socket_name: str, waker: int) -> str:
    """The victim run's code in `language`; `waker` is the pid whose SIGUSR2 releases it (Python checks)."""
    return snippet(language, _PYTHON_VICTIM, _NODE_VICTIM, secret=secret, socket=socket_name, waker=waker)


@dataclass(frozen=True, slots=True)
class Report:
    """A hostile run's result and its BLOCKED / LEAK lines, in order."""

    data: dict[str, Any]
    blocked: list[tuple[str, str]]
    leaked: list[tuple[str, str]]

    @classmethod
    def of(cls, data: dict[str, Any]) -> Report:
        blocked, leaked = [], []
        for line in data["stdout"].splitlines():
            kind, _, rest = line.partition(" ")
            what, _, detail = rest.rpartition(": ")
            if kind == "BLOCKED":
                blocked.append((what, detail))
            elif kind == "LEAK":
                leaked.append((what, detail))
        return cls(data, blocked, leaked)

    def __str__(self) -> str:
        return (
            f"exit_code {self.data['exit_code']}, error {self.data['error']!r}\n"
            f"--- stdout ---\n{self.data['stdout']}\n--- stderr ---\n{self.data['stderr']}"
        )

    def reasons(self) -> dict[str, str]:
        """What was blocked, with the errno name."""
        return dict(self.blocked)

    def assert_blocked(self, *, at_least: int = 1, only: tuple[str, ...] = ()) -> None:
        """The snippet finished, nothing leaked, at least `at_least` attempts were made and blocked
        (with one of the errno names in `only`, if given)."""
        assert self.data["exit_code"] == 0, f"the attack did not run to its end:\n{self}"
        assert not self.leaked, f"{len(self.leaked)} attempts got through:\n{self}"
        assert len(self.blocked) >= at_least, f"only {len(self.blocked)} attempts, {at_least} expected:\n{self}"
        if only:
            wrong = [(what, reason) for what, reason in self.blocked if reason not in only]
            assert not wrong, f"blocked, but not with {'/'.join(only)}: {wrong}\n{self}"

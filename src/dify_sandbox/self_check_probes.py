"""The snippets ``dify-sandbox check`` runs: each reports, as one JSON object, what a run can see and reach.

They run as any snippet would and look at themselves (pid, session, uid, rlimits, environment,
working dir) and at what they should not reach: the environment block of the process that runs
them (where a server keeps its API key), a signal to it, and the config file (which may hold the
key). What they read there is only tested for readability, never printed.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from dify_sandbox.executors.base import Language

__all__ = ["SELF_TEST_TEXT", "probe_code"]

# Round-trips through base64, JSON and UTF-8 stdout in both runtimes, as Dify's wrappers do.
SELF_TEST_TEXT = "dify-sandbox self-check: ünïcødé ✓ 中文"

_PYTHON_PROBE = """\
import base64, json, os

def _read(path):
    try:
        with open(path, "rb") as file:
            return file.read().decode("utf-8", "replace")
    except OSError:
        return None

def _signalable(pid):
    try:
        os.kill(pid, 0)  # signal 0: the permission check only, nothing is delivered
    except OSError:
        return False
    return True

_config = base64.b64decode("__CONFIG_B64__").decode("utf-8", "surrogateescape")

print(json.dumps({
    "echo": base64.b64decode("__TEXT_B64__").decode("utf-8"),
    "pid": os.getpid(),
    "uid": os.getuid(),
    "stat": _read("/proc/self/stat"),
    "limits": _read("/proc/self/limits"),
    "env_names": sorted(os.environ),
    "cwd": os.getcwd(),
    "home": os.environ.get("HOME"),
    "tmpdir": os.environ.get("TMPDIR"),
    "server_environ_readable": _read("/proc/__SERVER_PID__/environ") is not None,
    "server_signalable": _signalable(__SERVER_PID__),
    "config_file_readable": (_read(_config) is not None) if _config else None,
    "net_ns": os.readlink("/proc/self/ns/net") if os.path.exists("/proc/self/ns/net") else None,
}, ensure_ascii=False))
"""

_NODE_PROBE = """\
const fs = require('fs');

function read(path) {
  try { return fs.readFileSync(path, 'utf8'); } catch (error) { return null; }
}

const config = Buffer.from('__CONFIG_B64__', 'base64').toString('utf-8');

console.log(JSON.stringify({
  echo: Buffer.from('__TEXT_B64__', 'base64').toString('utf-8'),
  pid: process.pid,
  uid: process.getuid(),
  stat: read('/proc/self/stat'),
  limits: read('/proc/self/limits'),
  env_names: Object.keys(process.env).sort(),
  cwd: process.cwd(),
  home: process.env.HOME ?? null,
  tmpdir: process.env.TMPDIR ?? null,
  server_environ_readable: read('/proc/__SERVER_PID__/environ') !== null,
  server_signalable: (() => { try { return process.kill(__SERVER_PID__, 0); } catch (error) { return false; } })(),
  config_file_readable: config ? read(config) !== null : null,
  net_ns: (() => { try { return fs.readlinkSync('/proc/self/ns/net'); } catch (error) { return null; } })(),
}));
"""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8", "surrogateescape")).decode("ascii")


def probe_code(language: Language, config_file: Path | None) -> str:
    """The probe for ``language``; it tests this process and ``config_file`` (None: there is none)."""
    template = _PYTHON_PROBE if language == "python3" else _NODE_PROBE
    config = "" if config_file is None else str(config_file.absolute())
    return (
        template.replace("__TEXT_B64__", _b64(SELF_TEST_TEXT))
        .replace("__CONFIG_B64__", _b64(config))
        .replace("__SERVER_PID__", str(os.getpid()))
    )

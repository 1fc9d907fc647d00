"""Runs wrk with ``post_check.lua`` and parses the JSON line its ``done()`` hook prints; installs wrk if missing.

wrk, not a Python client, drives the throughput scenario: a Python load generator would need more CPU than the
server on this small machine and would measure itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LUA_SCRIPT = Path(__file__).resolve().parent / "post_check.lua"
JSON_PREFIX = "WRK_JSON "


class WrkError(RuntimeError):
    """wrk is missing and cannot be installed, or it failed."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    """The ``done()`` figures (latencies in microseconds) plus wrk's own text output."""

    stats: dict[str, Any]
    output: str

    @property
    def seconds(self) -> float:
        return float(self.stats["duration_us"]) / 1e6

    @property
    def socket_errors(self) -> int:
        return int(sum(self.stats[k] for k in ("connect_errors", "read_errors", "write_errors")))

    @property
    def good_responses(self) -> int:
        return int(self.stats["responses"] - self.stats["non2xx"] - self.stats["wrong_body"])

    @property
    def errors(self) -> int:
        """Every request that did not give a correct run: non-2xx, wrong body, socket error or timeout."""
        return int(self.stats["non2xx"] + self.stats["wrong_body"] + self.socket_errors + self.stats["timeouts"])


def ensure_wrk() -> str:
    """The path of wrk, installing the Debian/Ubuntu package first when it is missing (root or sudo needed)."""
    found = shutil.which("wrk")
    if found:
        return found
    if shutil.which("apt-get") is None:
        raise WrkError("wrk is not installed and apt-get is not available: install wrk, then run again")
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if prefix and shutil.which("sudo") is None:
        raise WrkError("wrk is not installed: run `apt-get install -y wrk` as root, then run again")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print("wrk not found: installing it with apt-get", flush=True)
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        proc = subprocess.run([*prefix, *command], env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise WrkError(f"`{' '.join(command)}` failed, install wrk by hand:\n{proc.stdout}{proc.stderr}")
    found = shutil.which("wrk")
    if not found:
        raise WrkError("apt-get installed wrk, but it is not on PATH")
    return found


def run_wrk(
    url: str,
    body: bytes,
    expected: bytes,
    headers: Mapping[str, str],
    *,
    connections: int,
    threads: int,
    seconds: float,
    timeout_seconds: float,
) -> WrkResult:
    """POST ``body`` to ``url`` for ``seconds``; a 2xx response counts as correct only if it contains ``expected``."""
    wrk = ensure_wrk()
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        body_file, expected_file = Path(tmp, "body"), Path(tmp, "expected")
        body_file.write_bytes(body)
        expected_file.write_bytes(expected)
        command = [
            wrk,
            f"--threads={threads}",
            f"--connections={connections}",
            f"--duration={max(1, round(seconds))}s",
            f"--timeout={timeout_seconds:g}s",
            "--latency",
            f"--script={LUA_SCRIPT}",
            url,
            "--",
            str(body_file),
            str(expected_file),
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=False)
    output = proc.stdout + proc.stderr
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(JSON_PREFIX)), None)
    if proc.returncode != 0 or line is None:
        raise WrkError(f"wrk failed with {proc.returncode}:\n{output}")
    return WrkResult(stats=json.loads(line.removeprefix(JSON_PREFIX)), output=output)

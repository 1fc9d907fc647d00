"""What a sync found and did, kept as ``status.json`` in the key dir: each package's state, the last sync.

Written by the one process that syncs (the supervisor, or ``dify-sandbox deps sync``) at the start
of a sync (the missing packages ``pending``) and at its end; read by the workers for the
dependency list, the hint after a failed import, and the metrics, and by ``dify-sandbox check``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["PACKAGE_STATES", "PackageState", "PackageStatus", "SyncResult", "SyncStatus"]

PackageState = Literal["installed", "pending", "failed", "refused", "missing"]
SyncResult = Literal["ok", "failed", "running", "never"]
# Every state a package can be in (the metrics label values).
PACKAGE_STATES: tuple[PackageState, ...] = ("installed", "pending", "failed", "refused", "missing")


@dataclass(slots=True)
class PackageStatus:
    """One requirement: its state, since when (epoch seconds), and why it is not installed."""

    name: str
    state: PackageState
    since: float
    detail: str = ""


@dataclass(slots=True)
class SyncStatus:
    """The last sync of one key dir."""

    key: str
    result: SyncResult = "never"
    started_at: float | None = None
    finished_at: float | None = None
    duration_s: float | None = None
    packages: dict[str, PackageStatus] = field(default_factory=dict)  # canonical name -> status

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SyncStatus:
        packages = {
            str(name): PackageStatus(
                name=str(entry.get("name", name)),
                state=entry.get("state", "missing"),
                since=float(entry.get("since", 0.0)),
                detail=str(entry.get("detail", "")),
            )
            for name, entry in dict(data.get("packages", {})).items()
        }
        return cls(
            key=str(data.get("key", "")),
            result=data.get("result", "never"),
            started_at=data.get("started_at"),
            finished_at=data.get("finished_at"),
            duration_s=data.get("duration_s"),
            packages=packages,
        )

    def write(self, path: Path) -> None:
        """Replaces ``path`` atomically, so a reader never sees half a file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".status-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump(self.to_dict(), file, indent=1, sort_keys=True)
            os.chmod(temp, 0o644)
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    @classmethod
    def read(cls, path: Path, key: str) -> SyncStatus:
        """The status at ``path``; an empty one (``never``) when there is none or it cannot be read."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls(key=key)
        return cls.from_dict(data) if isinstance(data, dict) else cls(key=key)

"""A worker's view of the package dir: which key's packages are on sys.path, and their states.

The supervisor tells each worker the key of the last sync (its packages are appended to
``sys.path``, after the service's own site-packages, so runs and the zygote import them) and the
key of a sync in progress (whose ``status.json`` says what is pending, for the hint after a failed
import).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import time
from pathlib import Path

from packaging.utils import canonicalize_name

from dify_sandbox.config import Settings
from dify_sandbox.packages.layout import PackageDir, resolve_packages_dir
from dify_sandbox.packages.status import PackageStatus, SyncStatus

__all__ = ["PackagesView"]

_MISSING_MODULE = re.compile(r"ModuleNotFoundError: No module named '([^'.]+)")


class PackagesView:
    """What one worker knows of the package dir."""

    def __init__(self, settings: Settings, active_key: str | None = None, syncing_key: str | None = None) -> None:
        self.packages = PackageDir(resolve_packages_dir(settings))
        self.active_key = active_key
        self.syncing_key = syncing_key or active_key
        self._paths: list[str] = []
        self._cache: tuple[str, float, SyncStatus] | None = None
        if active_key is not None:
            self.activate(active_key)

    @property
    def root(self) -> Path:
        return self.packages.root

    def activate(self, key: str) -> None:
        """Puts ``key``'s import dirs on sys.path (after everything else) in place of the previous key's."""
        self.active_key = self.syncing_key = key
        paths = self.packages.site_dirs(key)
        sys.path[:] = [path for path in sys.path if path not in self._paths]
        sys.path.extend(paths)
        self._paths = paths
        importlib.invalidate_caches()

    def status(self) -> SyncStatus | None:
        """The status of the sync in progress, else of the last one (None before any)."""
        key = self.syncing_key
        if key is None:
            return None
        path = self.packages.status_file(key)
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            return None
        if self._cache is None or self._cache[:2] != (key, mtime):
            self._cache = (key, mtime, SyncStatus.read(path, key))
        return self._cache[2]

    def import_hint(self, stderr: str) -> str:
        """A line for a run whose import failed because its package is pending or failed; else empty."""
        match = _MISSING_MODULE.search(stderr)
        if match is None:
            return ""
        status = self.status()
        if status is None:
            return ""
        entry = _entry_for(status, match.group(1))
        if entry is None:
            return ""
        if entry.state == "pending":
            return f"{entry.name} is being installed, started {round(time.time() - entry.since)} s ago\n"
        if entry.state in ("failed", "refused"):
            return f"{entry.name} could not be installed ({entry.state}: {entry.detail})\n"
        return ""


def _entry_for(status: SyncStatus, module: str) -> PackageStatus | None:
    """The package a missing top-level module most likely belongs to (names compared as pip compares them)."""
    wanted = canonicalize_name(module)
    for canonical, entry in status.packages.items():
        if canonical in (wanted, f"python-{wanted}", f"py{wanted}") or canonical.replace("-", "") == wanted:
            return entry
    return None

"""Each package's state in one place, for ``/v1/sandbox/dependencies``, ``deps list``, ``check`` and the metrics.

A package is ``installed`` when a version of it is importable (from the service's environment or
the package dir); otherwise its state is what the last (or the running) sync recorded, or
``missing`` when no sync has looked at it yet.
"""

from __future__ import annotations

from typing import Any

from packaging.utils import canonicalize_name

from dify_sandbox.config import Settings
from dify_sandbox.dependencies import read_requirements
from dify_sandbox.packages.status import PackageState
from dify_sandbox.packages.view import PackagesView

__all__ = ["dependency_report", "package_states", "sync_summary"]


def package_states(settings: Settings, view: PackagesView) -> list[dict[str, Any]]:
    """``{"name", "version", "state", "detail"}`` for the built-ins and every requirement, in the listing's order."""
    status = view.status()
    rows = []
    for dependency in read_requirements(settings.requirements_files):
        entry = status.packages.get(canonicalize_name(dependency.name)) if status is not None else None
        state: PackageState = "installed"
        detail = ""
        if not dependency.version:
            state = entry.state if entry is not None and entry.state != "installed" else "missing"
            detail = entry.detail if entry is not None else ""
        rows.append({"name": dependency.name, "version": dependency.version, "state": state, "detail": detail})
    return rows


def sync_summary(view: PackagesView) -> dict[str, Any]:
    """The last sync: its key, result, duration and when it finished (``result: never`` before any)."""
    status = view.status()
    if status is None:
        return {"key": view.syncing_key, "result": "never", "duration_s": None, "finished_at": None}
    return {
        "key": status.key,
        "result": status.result,
        "duration_s": status.duration_s,
        "finished_at": status.finished_at,
    }


def dependency_report(settings: Settings, view: PackagesView) -> dict[str, Any]:
    """The package dir, the last sync and every package's state (``deps list`` and ``check``)."""
    return {
        "packages_dir": str(view.root),
        "last_sync": sync_summary(view),
        "packages": package_states(settings, view),
    }

"""One sync: compare what the requirement files name with what is installed, pip-install what is missing.

A requirement is installed when a distribution of that name satisfying its specifier is importable
from the service's own environment or from the key dir; one that names a service package at
another version is refused without running pip; the rest are installed under the key dir in one
pip run (and, should that fail for a reason other than the network, one by one, so that one bad
line does not keep the others out). Nothing missing: nothing runs, so an unchanged file installs
nothing on restart. Every outcome is logged, with pip's last lines for a failure, and written to
the key dir's ``status.json``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
from packaging.utils import canonicalize_name

from dify_sandbox.config import Settings
from dify_sandbox.packages.layout import PackageDir, resolve_packages_dir
from dify_sandbox.packages.pip_runner import PipOutcome, pip_install, service_distributions, write_constraints
from dify_sandbox.packages.requirements import RequirementLine, read_lines, requirements_key
from dify_sandbox.packages.status import PackageState, PackageStatus, SyncStatus

__all__ = ["RequirementsSync", "SyncReport"]

logger = structlog.get_logger("dify_sandbox.packages")


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What one sync left: the key, each package's status, and whether it installed anything."""

    key: str
    status: SyncStatus
    installed_now: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return all(entry.state == "installed" for entry in self.status.packages.values())

    def not_installed(self) -> list[PackageStatus]:
        return [entry for entry in self.status.packages.values() if entry.state != "installed"]


class RequirementsSync:
    """Syncs the requirement files of ``settings`` into its package dir; one instance per service."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.packages = PackageDir(resolve_packages_dir(settings))
        self._quiet_key: str | None = None  # a sync that finds this key complete again logs at debug only

    def service_paths(self) -> list[str]:
        """The import paths of the service's own environment (the package dir left out)."""
        return [path for path in sys.path if path and not self.packages.contains(path)]

    def current(self) -> tuple[str, list[RequirementLine]]:
        """The key of the requirement files as they are now, and their applicable lines."""
        lines = [line for line in read_lines(self.settings.requirements_files) if line.applies]
        return requirements_key(lines), lines

    def run(self, on_pending: Callable[[str, SyncStatus], None] | None = None) -> SyncReport:
        """Syncs now (blocking: pip may take minutes); ``on_pending`` hears of an install before pip starts."""
        key, lines = self.current()
        started = time.time()
        status = SyncStatus(key=key, result="running", started_at=started)
        service = service_distributions(self.service_paths())
        missing = self._assess(lines, key, service, status, started)
        if not missing:
            status.result = "ok" if all(e.state == "installed" for e in status.packages.values()) else "failed"
            self._finish(status, started, write=bool(self.packages.site_dirs(key)) or status.result != "ok")
            return SyncReport(key, status)
        try:
            with self.packages.locked():
                # Another service sharing the dir may have installed them while this one waited.
                missing = self._assess(lines, key, service, status, started)
                installed = self._install(missing, key, service, status, on_pending) if missing else []
                self._finish(status, started, write=True)
                self.packages.prune(keep=key)
        except OSError as exc:
            for line in missing:
                status.packages[line.canonical] = PackageStatus(line.name, "failed", started, f"{exc}")
            logger.error("Cannot install into the package dir", path=str(self.packages.root), error=str(exc))
            self._finish(status, started, write=False)
            return SyncReport(key, status)
        return SyncReport(key, status, tuple(installed))

    def _assess(
        self, lines: Sequence[RequirementLine], key: str, service: dict[str, str], status: SyncStatus, now: float
    ) -> list[RequirementLine]:
        """Fills ``status`` with the installed and refused lines; returns the missing ones."""
        importlib.invalidate_caches()
        paths = self.service_paths() + self.packages.site_dirs(key)
        missing: list[RequirementLine] = []
        for line in lines:
            version = _installed_version(line.name, paths)
            if version is not None and line.requirement.specifier.contains(version, prereleases=True):
                status.packages[line.canonical] = PackageStatus(line.name, "installed", now)
            elif line.canonical in service:
                detail = f"conflicts with the service's own {line.name} {service[line.canonical]}"
                status.packages[line.canonical] = PackageStatus(line.name, "refused", now, detail)
            else:
                missing.append(line)
        return missing

    def _install(
        self,
        missing: list[RequirementLine],
        key: str,
        service: dict[str, str],
        status: SyncStatus,
        on_pending: Callable[[str, SyncStatus], None] | None,
    ) -> list[str]:
        started = status.started_at or time.time()
        for line in missing:
            status.packages[line.canonical] = PackageStatus(line.name, "pending", started)
        status.write(self.packages.status_file(key))
        if on_pending is not None:
            on_pending(key, status)
        logger.info("Installing packages", packages=[line.text for line in missing], path=str(self.packages.root))
        constraints = self.packages.key_dir(key) / "constraints.txt"
        write_constraints(constraints, service)
        outcomes: list[tuple[list[RequirementLine], PipOutcome]] = []
        outcome = self._pip(missing, key, constraints)
        outcomes.append((missing, outcome))
        if not outcome.ok and len(missing) > 1 and not outcome.network:
            outcomes = [([line], self._pip([line], key, constraints)) for line in missing]
        self.packages.seal(key)
        importlib.invalidate_caches()
        paths = self.service_paths() + self.packages.site_dirs(key)
        installed: list[str] = []
        for group, result in outcomes:
            for line in group:
                version = _installed_version(line.name, paths)
                if version is not None and line.requirement.specifier.contains(version, prereleases=True):
                    status.packages[line.canonical] = PackageStatus(line.name, "installed", time.time())
                    installed.append(line.name)
                    logger.info("Package installed", package=line.name, version=version)
                    continue
                state: PackageState = "refused" if result.conflict else "failed"
                detail = result.reason if not result.ok else "pip succeeded but the package is not importable"
                status.packages[line.canonical] = PackageStatus(line.name, state, time.time(), detail)
                if state == "refused":
                    logger.error(
                        "Requirement refused: it conflicts with the service's own packages",
                        requirement=line.text,
                        pip_output=result.tail,
                    )
                else:
                    logger.error(
                        "Package install failed",
                        requirement=line.text,
                        reason="index unreachable" if result.network else detail,
                        pip_output=result.tail,
                    )
        return installed

    def _pip(self, lines: list[RequirementLine], key: str, constraints: Path) -> PipOutcome:
        return pip_install(
            [line.text for line in lines],
            self.packages.key_dir(key),
            constraints,
            self.settings.pip_mirror_url,
            self.packages.site_dirs(key),
        )

    def _finish(self, status: SyncStatus, started: float, write: bool) -> None:
        status.finished_at = time.time()
        status.duration_s = round(status.finished_at - started, 3)
        status.result = "ok" if all(e.state == "installed" for e in status.packages.values()) else "failed"
        if write:
            status.write(self.packages.status_file(status.key))
        for entry in status.packages.values():
            if entry.state != "installed":
                logger.warning(
                    "Package not installed; snippets cannot import it",
                    package=entry.name,
                    state=entry.state,
                    detail=entry.detail,
                )
        quiet = status.result == "ok" and self._quiet_key == status.key
        self._quiet_key = status.key if status.result == "ok" else None
        # Periodic syncs that change nothing stay out of the log (the official service's were noise).
        (logger.debug if quiet else logger.info)(
            "Requirements synced",
            key=status.key,
            result=status.result,
            packages=len(status.packages),
            duration_s=status.duration_s,
        )


def _installed_version(name: str, paths: Sequence[str]) -> str | None:
    dist = next(iter(importlib.metadata.distributions(name=canonicalize_name(name), path=list(paths))), None)
    return None if dist is None else dist.version

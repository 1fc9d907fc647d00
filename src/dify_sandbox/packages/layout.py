"""The package dir (``SANDBOX_PACKAGES_DIR``): one sub-dir per requirements key, a status file, a lock.

::

    <packages dir>/
      .lock                                   held while a service installs (services may share the dir)
      cpython-311-linux-x86-64-<hash>/        pip install --prefix here
        lib/python3.11/site-packages/         appended to sys.path, after the service's own site-packages
        status.json                           each package's state and the last sync (see status.py)

By default the dir is beside the mounted requirements file (``dependencies/python-packages``), so
a compose or Kubernetes volume keeps it across restarts. Where that is not writable, a dir under
the system temp dir is used instead (installed again after each restart), with a warning.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from dify_sandbox.config import Settings

__all__ = ["PackageDir", "resolve_packages_dir", "with_packages_dir"]

logger = logging.getLogger("dify_sandbox.packages")

DEFAULT_DIR_NAME = "python-packages"
STATUS_FILE = "status.json"
LOCK_FILE = ".lock"
# Key dirs kept besides the current one: a zygote started before a sync may still import from it.
KEEP_PREVIOUS = 1


class PackageDir:
    """The package dir and the paths inside it."""

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.abspath(root))

    def key_dir(self, key: str) -> Path:
        return self.root / key

    def status_file(self, key: str) -> Path:
        return self.key_dir(key) / STATUS_FILE

    def site_dirs(self, key: str) -> list[str]:
        """The import dirs pip made under ``key`` (purelib and platlib may differ); empty before any install."""
        base = self.key_dir(key)
        found = sorted(glob.glob(str(base / "lib*" / "python*" / "site-packages")))
        found += sorted(glob.glob(str(base / "lib*" / "python*" / "dist-packages")))
        return [os.path.realpath(path) for path in found if os.path.isdir(path)]

    def contains(self, path: str) -> bool:
        """True if ``path`` lies inside the package dir (used to tell the service's own packages apart)."""
        root = os.path.realpath(self.root)
        real = os.path.realpath(path)
        return real == root or real.startswith(root.rstrip("/") + "/")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Holds the dir's lock: one install at a time, across every service that shares the dir."""
        self.root.mkdir(parents=True, exist_ok=True)
        _drop_write_for_others(self.root)
        with open(self.root / LOCK_FILE, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logger.info("Waiting for another service's install in %s", self.root)
                fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def seal(self, key: str) -> None:
        """Takes group and other write bits off everything under ``key``, so runs of other uids cannot change it."""
        for directory, dirs, files in os.walk(self.key_dir(key)):
            for name in (directory, *(os.path.join(directory, entry) for entry in (*dirs, *files))):
                _drop_write_for_others(Path(name))

    def prune(self, keep: str) -> None:
        """Removes key dirs other than ``keep`` and the newest ``KEEP_PREVIOUS`` others (call with the lock held)."""
        others = [path for path in self.root.iterdir() if path.is_dir() and path.name != keep]
        others.sort(key=lambda path: path.stat().st_mtime, reverse=True)
        for stale in others[KEEP_PREVIOUS:]:
            if (stale / STATUS_FILE).exists():  # only dirs this service made
                shutil.rmtree(stale, ignore_errors=True)
                logger.info("Removed the packages of an older requirements set: %s", stale)


def _drop_write_for_others(path: Path) -> None:
    with contextlib.suppress(OSError):
        mode = path.lstat().st_mode
        if not stat.S_ISLNK(mode) and mode & (stat.S_IWGRP | stat.S_IWOTH):
            path.chmod(stat.S_IMODE(mode) & ~(stat.S_IWGRP | stat.S_IWOTH))


def resolve_packages_dir(settings: Settings) -> Path:
    """The package dir: the setting, else beside the first requirements file, else a temp dir (with a warning)."""
    if settings.packages_dir is not None:
        return Path(os.path.abspath(settings.packages_dir))
    first = settings.requirements_files[0] if settings.requirements_files else Path("dependencies/x")
    beside = Path(os.path.abspath(first.parent / DEFAULT_DIR_NAME))
    if _writable(beside):
        return beside
    fallback = _own_temp_dir(Path(tempfile.gettempdir()) / f"dify-sandbox-packages-{os.geteuid()}")
    logger.warning(
        "%s is not writable; packages are installed in %s, which does not survive a restart "
        "(make the volume writable for uid %d or set SANDBOX_PACKAGES_DIR)",
        beside,
        fallback,
        os.geteuid(),
    )
    return fallback


def _own_temp_dir(path: Path) -> Path:
    """``path`` if this user made it and no one else can write it; else a fresh dir.

    The name in the shared temp dir is predictable: one made by another local user could hold
    packages the service would import.
    """
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o755)
    info = path.lstat()
    if stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return path
    fresh = Path(tempfile.mkdtemp(prefix="dify-sandbox-packages-"))
    fresh.chmod(0o755)  # runs of other uids import from it
    logger.warning("%s is not the service's own; using %s instead", path, fresh)
    return fresh


def with_packages_dir(settings: Settings) -> Settings:
    """``settings`` with ``packages_dir`` resolved, so every process of the service uses the same dir."""
    if settings.packages_dir is not None:
        return settings
    return settings.model_copy(update={"packages_dir": resolve_packages_dir(settings)})


def _writable(path: Path) -> bool:
    """True if ``path`` exists and is writable, or the nearest existing parent is (so it can be made)."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)

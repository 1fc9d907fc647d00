"""A run root (the zygote's, the node pool's) and the run dirs in it, with a mode no run can keep changed.

Without a uid of its own a run has the service's uid and so owns every dir here; Landlock keeps it
out of them but does not cover metadata, so it can ``chmod`` the run root (and then no later run
could get its dir). Its owner puts the mode back before it makes the next run's dir (the zygote
before every fork), so what a run changes does not outlive it. (While it runs it can still
``chmod`` a concurrent run's dir; the README's security model lists it.)
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from typing import TypeVar

__all__ = ["RunRoot", "make_own_dir"]

T = TypeVar("T")

# Traverse only for other uids: each run's uid may enter its own dir, made for it, and nothing else.
MODE_PER_RUN_UIDS = 0o711
MODE_SERVICE_ONLY = 0o700
# A run of the service's uid may chmod the root again between our chmod and our mkdir: tries.
OWN_DIR_ATTEMPTS = 8


def make_own_dir(path: str, root_mode: int) -> None:
    """Makes ``path`` and enters it, as the root's owner: a mode a concurrent run took away is put back.

    Once inside, the process needs the root no more: its Landlock rule and everything it does
    later go through its working dir.
    """
    for attempt in range(OWN_DIR_ATTEMPTS):
        try:
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                if attempt == 0:
                    raise
            os.chdir(path)
            return
        except PermissionError:
            if attempt == OWN_DIR_ATTEMPTS - 1:
                raise
            os.chmod(os.path.dirname(path), root_mode)


class RunRoot:
    """A run root: made at start, its mode kept; the zygote's children's dirs named and removed."""

    def __init__(self, root: str, on_restored: Callable[[str], None]) -> None:
        self.root = root
        self.mode = MODE_SERVICE_ONLY
        self._on_restored = on_restored  # told the root's path when a run had changed its mode

    def create(self, per_run_uids: bool) -> None:
        """Makes the run root (it may exist) with the mode runs of their own uid or of ours need."""
        os.makedirs(self.root, mode=MODE_SERVICE_ONLY, exist_ok=True)
        self.mode = MODE_PER_RUN_UIDS if per_run_uids else MODE_SERVICE_ONLY
        os.chmod(self.root, self.mode)

    def make_dir(self) -> str:
        """A new run dir (``mkdtemp``), made even if a concurrent run just took the root's mode away."""
        return self.retrying(lambda: tempfile.mkdtemp(prefix="run-", dir=self.root))

    def retrying(self, step: Callable[[], T]) -> T:
        """``step`` (which goes through the root), with the root's mode put back before each try."""
        attempt = 1
        while True:
            self.restore_mode()
            try:
                return step()
            except PermissionError:
                if attempt == OWN_DIR_ATTEMPTS:
                    raise
                attempt += 1

    def restore_mode(self) -> None:
        """Puts the run root's mode back if a run changed it (one ``stat`` when it did not)."""
        try:
            if stat.S_IMODE(os.stat(self.root).st_mode) == self.mode:
                return
            os.chmod(self.root, self.mode)
        except OSError:
            return
        self._on_restored(self.root)

    def path(self, pid: int) -> str:
        """The dir of the run whose child has this pid."""
        return os.path.join(self.root, f"run-{pid}")

    def remove(self, pid: int) -> None:
        """Deletes a finished run's dir if the child could not (killed, or confined); usually it is empty."""
        self.restore_mode()
        path = self.path(pid)
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError:
            shutil.rmtree(path, ignore_errors=True)

    def remove_all(self) -> None:
        """Deletes the run root and whatever is left in it."""
        self.restore_mode()
        shutil.rmtree(self.root, ignore_errors=True)

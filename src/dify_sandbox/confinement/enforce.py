"""Applying a :class:`~dify_sandbox.confinement.policy.Confinement` to a run's process.

:class:`RunConfinement` is built once per process that starts runs (the zygote, a node launcher):
it opens the rules' paths and holds the seccomp programs ready, so a run enters its domain with a
handful of syscalls. Standard library only.
"""

from __future__ import annotations

from dify_sandbox.confinement import landlock
from dify_sandbox.confinement.policy import Confinement
from dify_sandbox.confinement.syscall_filter import SyscallFilter

__all__ = ["RunConfinement"]


class RunConfinement:
    """The layers of one plan, ready to enter: ``enter`` for every run, ``go_offline`` for runs without network."""

    def __init__(self, plan: Confinement) -> None:
        self.domain = landlock.Domain(plan.landlock_abi, plan.rules()) if plan.landlock_abi >= 1 else None
        ban = landlock.NetworkBan(plan.landlock_abi)
        self.network_ban = ban if ban.available else None
        self.denylist = SyscallFilter(plan.denylist) if plan.denylist else None
        self.offline = SyscallFilter(plan.offline) if plan.offline else None

    @property
    def closes_network(self) -> bool:
        """Whether :meth:`go_offline` leaves a run no network (else a network namespace is needed)."""
        return self.offline is not None

    @staticmethod
    def prepare_process() -> None:
        """``no_new_privs`` for this process and all it forks, once: both layers require it."""
        landlock.forbid_new_privileges()

    def enter(self, own_dir: str) -> None:
        """Confines this process to its own dir and the runtime's files, and loads the denylist."""
        if self.domain is not None:
            self.domain.enter(own_dir)
        if self.denylist is not None:
            self.denylist.load()

    def go_offline(self) -> None:
        """No TCP (Landlock) and no socket but AF_UNIX (seccomp) from now on."""
        if self.network_ban is not None:
            self.network_ban.enter()
        if self.offline is not None:
            self.offline.load()

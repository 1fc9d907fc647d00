"""CPU accounting that makes a noisy shared machine visible: what the measured processes used, what the whole
machine used, and the difference ("background load", in cores) that neither the server nor the load generator
explains. A background load well above 0 means the figures of that scenario were taken on a busy machine.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass

import psutil  # type: ignore[import-untyped]  # no stubs in the dev group


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent doing work since boot (steal and iowait excluded)."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + t.irq + t.softirq)


def own_seconds() -> float:
    """CPU seconds of this process (the bench and its in-process client) plus its reaped children."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime + reaped_children_seconds()


def reaped_children_seconds() -> float:
    """CPU seconds of this process's children that have been waited for (e.g. wrk after it ended)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(slots=True)
class MachineWindow:
    """Machine CPU and wall time over a measurement window; call ``close()`` at its end."""

    start_busy: float = 0.0
    start_wall: float = 0.0
    busy: float = 0.0
    wall: float = 0.0

    @classmethod
    def open(cls) -> MachineWindow:
        return cls(start_busy=machine_busy_seconds(), start_wall=time.perf_counter())

    def close(self) -> None:
        self.busy = machine_busy_seconds() - self.start_busy
        self.wall = time.perf_counter() - self.start_wall

    def background_cores(self, measured_cpu_seconds: float) -> float:
        """Average cores busy with work other than ``measured_cpu_seconds`` during the window."""
        return max(0.0, self.busy - measured_cpu_seconds) / self.wall

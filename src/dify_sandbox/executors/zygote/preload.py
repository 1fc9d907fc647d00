"""The zygote's preload: import the common modules once, single-threaded, so every forked run starts warm.

numpy, OpenBLAS, MKL and numexpr start a pool of threads when they load unless told not to, and
a process with threads must not fork (see README.md, rule 1). So the thread counts are pinned to
1 while the zygote imports, and the operator's values are put back before any run. After each
import ``/proc/self/task`` must still hold one task: a module that leaves a thread running cannot
be unloaded, so the zygote re-executes itself without it (and says so).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = ["THREAD_COUNT_VARIABLES", "pinned_thread_counts", "preload_modules", "reexec_without", "task_count"]

# The variables numeric libraries read their thread count from at load time.
THREAD_COUNT_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMEXPR_MAX_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "BLIS_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "RAYON_NUM_THREADS",
    "POLARS_MAX_THREADS",
)


# A first use that modules defer past their import (lazy submodules, dtype and dispatch caches): done
# once in the zygote, it is not redone, page by copied page, in every run (a pandas run: 3.5 ms, not 10).
WARM_UPS = {
    "numpy": "import numpy\nnumpy.arange(3).sum()",
    "pandas": "import pandas\nint(pandas.DataFrame({'a': range(3)})['a'].sum())",
}


def task_count() -> int:
    """Threads of this process, as the kernel counts them."""
    return len(os.listdir("/proc/self/task"))


@contextlib.contextmanager
def pinned_thread_counts() -> Iterator[dict[str, str | None]]:
    """Sets every thread count to 1 for the duration; restores the previous values (or their absence) after."""
    saved = {name: os.environ.get(name) for name in THREAD_COUNT_VARIABLES}
    os.environ.update(dict.fromkeys(THREAD_COUNT_VARIABLES, "1"))
    try:
        yield saved
    finally:
        restore(saved)


def restore(saved: dict[str, str | None]) -> None:
    """Puts the saved values back."""
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def preload_modules(
    names: Sequence[str], package_paths: Sequence[str], log: Callable[..., None]
) -> tuple[int, str | None]:
    """Imports ``names`` in order; returns how many loaded and the first that left a thread running (if any)."""
    for path in package_paths:
        if path not in sys.path:
            sys.path.append(path)  # after the service's own site-packages
    loaded = 0
    for name in names:
        started = time.perf_counter()
        try:
            importlib.import_module(name)
        except Exception as exc:
            log("Preload module failed", "warning", module=name, error=f"{type(exc).__name__}: {exc}")
            continue
        if task_count() > 1:
            return loaded, name
        if name in WARM_UPS:
            try:
                exec(compile(WARM_UPS[name], f"<warm-up {name}>", "exec"), {})  # noqa: S102 - a constant above
            except Exception as exc:
                log("Warm-up failed", "warning", module=name, error=f"{type(exc).__name__}: {exc}")
            if task_count() > 1:
                return loaded, name
        loaded += 1
        log("Preloaded module", "debug", module=name, ms=round((time.perf_counter() - started) * 1000, 1))
    return loaded, None


def reexec_without(config: dict[str, Any], module: str, saved_environment: dict[str, str | None]) -> None:
    """Starts this zygote afresh (same pid, same socket) with ``module`` left out of the preload; never returns.

    The start-up document is handed over again on stdin through a memfd; execve ends the threads.
    """
    config = {**config, "skip_modules": [*config.get("skip_modules", []), module]}
    restore(saved_environment)
    document = os.memfd_create("zygote-config")
    os.write(document, json.dumps(config).encode())
    os.lseek(document, 0, os.SEEK_SET)
    os.dup2(document, 0)
    os.close(document)
    os.set_inheritable(int(config["socket_fd"]), True)
    os.execv(sys.executable, [sys.executable, "-P", "-m", "dify_sandbox.executors.zygote"])

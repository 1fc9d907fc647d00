"""Executors run one snippet and return its outcome; they are chosen by name and imported lazily.

The thread path never imports fork code and vice versa, so the map holds import strings.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dify_sandbox.config import ExecutorKind, Settings
    from dify_sandbox.executors.base import Executor
    from dify_sandbox.metrics import SandboxMetrics
    from dify_sandbox.run_uids import RunUids

EXECUTORS: dict[str, str] = {
    "fork": "dify_sandbox.executors.zygote.client:ZygoteExecutor",
    "thread": "dify_sandbox.executors.thread.executor:ThreadExecutor",
}


def create_executor(
    kind: ExecutorKind, settings: Settings, metrics: SandboxMetrics | None = None, uids: RunUids | None = None
) -> Executor:
    """Imports the executor class registered under ``kind`` and builds it (only fork runs get ``uids``)."""
    module_name, _, class_name = EXECUTORS[kind].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    executor: Executor = cls(settings, metrics, uids) if kind == "fork" else cls(settings, metrics)
    return executor

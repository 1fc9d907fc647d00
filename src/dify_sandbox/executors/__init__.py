"""Executors run one snippet and return its outcome; they are chosen by name and imported lazily.

The thread path never imports fork code and vice versa, so the map holds import strings.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dify_sandbox.config import ExecutorKind
    from dify_sandbox.executors.base import Executor

EXECUTORS: dict[str, str] = {
    "fork": "dify_sandbox.executors.zygote.client:ZygoteExecutor",
    "thread": "dify_sandbox.executors.thread:ThreadExecutor",
}


def executor_class(kind: ExecutorKind) -> type[Executor]:
    """Imports and returns the executor class registered under ``kind``."""
    module_name, _, class_name = EXECUTORS[kind].partition(":")
    cls: type[Executor] = getattr(importlib.import_module(module_name), class_name)
    return cls

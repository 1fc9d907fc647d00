"""The prctl calls: non-dumpable server processes and the zygote's subreaper role."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import ctypes, ctypes.util
from dify_sandbox._prctl import become_subreaper, forbid_inspection
libc = ctypes.CDLL(ctypes.util.find_library("c"))
assert libc.prctl(3, 0, 0, 0, 0) == 1          # PR_GET_DUMPABLE before
assert forbid_inspection()
assert libc.prctl(3, 0, 0, 0, 0) == 0
value = ctypes.c_int(0)
assert become_subreaper()
libc.prctl(37, ctypes.byref(value), 0, 0, 0)    # PR_GET_CHILD_SUBREAPER
assert value.value == 1
print("ok")
"""


def test_prctl_calls_take_effect() -> None:
    """forbid_inspection clears the dumpable flag; become_subreaper sets the subreaper flag."""
    completed = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=30, check=False)
    assert completed.stdout == "ok\n", completed.stderr

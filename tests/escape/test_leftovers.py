"""Leftovers: a process a run detaches from itself (setsid, double fork) is gone soon after the run ends."""

from __future__ import annotations

import pytest

from tests.integration.conftest import processes_with_cmdline
from tests.polling import wait_for

pytestmark = pytest.mark.integration

LEFTOVER_GRACE = 3.0

DOUBLE_FORK_PY = """\
import os

if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", "{marker}"])
    os._exit(0)
os.wait()
print("detached")
"""

DETACHED_SPAWN_JS = """\
const { spawn } = require('child_process');
spawn('sleep', ['{marker}'], { detached: true, stdio: 'ignore' }).unref();
console.log('detached');
"""

# Detached with an environment of its own: nothing in it names the run.
DETACHED_EMPTY_ENV_JS = """\
const { spawn } = require('child_process');
spawn('/bin/sleep', ['{marker}'], { argv0: 'sleep', detached: true, stdio: 'ignore', env: {} }).unref();
console.log('detached');
"""

DOUBLE_FORK_EMPTY_ENV_PY = """\
import os

if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execve("/bin/sleep", ["sleep", "{marker}"], {})
    os._exit(0)
os.wait()
print("detached")
"""

SETSID_SHELL_JS = """\
const { execSync } = require('child_process');
execSync('setsid sleep {marker} > /dev/null 2>&1 &');
console.log('detached');
"""

LEFTOVERS = {
    "python3-setsid-double-fork": ("python3", DOUBLE_FORK_PY),
    "python3-double-fork-empty-env": ("python3", DOUBLE_FORK_EMPTY_ENV_PY),
    "nodejs-detached-spawn": ("nodejs", DETACHED_SPAWN_JS),
    "nodejs-detached-empty-env": ("nodejs", DETACHED_EMPTY_ENV_JS),
    "nodejs-setsid-shell": ("nodejs", SETSID_SHELL_JS),
}


@pytest.mark.parametrize("name", list(LEFTOVERS))
def test_detached_process_gone_after_run(sandbox, sleep_marker, name):
    """Scenario: a run leaves a detached `sleep <marker>` behind.

    1. The run starts it outside its own process group and session, and ends.
    2. Within a few seconds no `sleep <marker>` is left.
    """
    language, code = LEFTOVERS[name]
    data = sandbox.run_ok(code.replace("{marker}", sleep_marker), language=language)
    assert data["stdout"] == "detached\n", data
    gone = wait_for(lambda: not processes_with_cmdline(["sleep", sleep_marker]), LEFTOVER_GRACE)
    assert gone, f"still running {LEFTOVER_GRACE} s after the run: {processes_with_cmdline(['sleep', sleep_marker])}"
    sandbox.assert_unharmed()

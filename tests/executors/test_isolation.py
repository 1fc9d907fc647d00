"""The fork executor's limits and isolation: rlimits named in the error, per-run users, escaped processes."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import psutil
import pytest

from dify_sandbox.executors.outcome import Cause
from dify_sandbox.executors.zygote.client import ZygoteExecutor
from dify_sandbox.executors.zygote.isolation import Isolation

from .conftest import Harness


def _isolation(harness: Harness) -> Isolation:
    executor = harness.executor
    assert isinstance(executor, ZygoteExecutor)
    assert executor.isolation is not None
    return executor.isolation


@pytest.fixture(scope="module")
def limited() -> Iterator[Harness]:
    harness = Harness(
        "fork",
        memory_limit_mb=512,
        max_file_size_mb=1,
        max_open_files=64,
        cpu_limit_seconds=1,
        max_processes=64,
        max_disk_bytes=4 * 1024 * 1024,
    )
    yield harness
    harness.close()


@pytest.fixture(scope="module")
def defaults() -> Iterator[Harness]:
    harness = Harness("fork")
    yield harness
    harness.close()


def _gone(arg: str, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [
            p
            for p in psutil.process_iter(["cmdline", "status"])
            if arg in (p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE
        ]
        if not alive:
            return True
        time.sleep(0.05)
    return False


def test_memory_limit_is_named(limited: Harness) -> None:
    """Allocating past the memory limit ends the run with 'memory limit exceeded'."""
    result = limited.run("x = bytearray(1024 * 1024 * 1024)")
    assert result.exit_code == 255
    assert "MemoryError" in result.stderr
    assert "error: memory limit exceeded" in result.error


def test_file_size_limit_is_named(limited: Harness) -> None:
    """Writing past the file size limit ends the run with 'file size limit exceeded'."""
    result = limited.run("with open('big', 'wb') as f:\n    f.write(b'x' * (2 * 1024 * 1024))")
    assert "error: file size limit exceeded" in result.error


def test_open_files_limit_is_named(limited: Harness) -> None:
    """Opening more files than allowed ends the run with 'open files limit exceeded'."""
    result = limited.run("files = [open(f'f{i}', 'w') for i in range(200)]")
    assert "error: open files limit exceeded" in result.error


@pytest.mark.parametrize(
    ("what", "code"),
    [
        ("files", "import os\nfor i in range(100):\n    open(f'f{i}', 'wb').write(os.urandom(512 * 1024))"),
        ("inodes", "import os\nfor i in range(10 ** 6):\n    os.mkdir(f'd{i}')"),
    ],
)
def test_disk_budget_is_named(limited: Harness, what: str, code: str) -> None:
    """A run writing past SANDBOX_MAX_DISK_BYTES (big files, or a flood of dirs) is killed, named as the disk limit."""
    result = limited.run(code + "\nimport time\ntime.sleep(10)", timeout=8)
    assert result.exit_code == -1, result
    assert result.outcome.cause is not Cause.TIMEOUT, result
    assert "error: disk limit exceeded" in result.error


def test_cpu_limit_is_named(limited: Harness) -> None:
    """A busy loop past the CPU limit is stopped by SIGXCPU, named as the cpu time limit."""
    result = limited.run("while True:\n    pass", timeout=10)
    assert result.exit_code == -1
    assert result.outcome.cause is not Cause.TIMEOUT
    assert "error: cpu time limit exceeded" in result.error


def test_numpy_and_pandas_work_under_the_default_limits(defaults: Harness) -> None:
    """The default limits leave room for numpy and pandas."""
    pytest.importorskip("numpy")
    pytest.importorskip("pandas")
    code = "import numpy as np, pandas as pd\nprint(pd.DataFrame({'a': np.arange(100000)}).a.sum())"
    result = defaults.run(code, timeout=30)
    assert (result.stdout, result.error) == ("4999950000\n", "")


def test_runs_have_their_own_unprivileged_user(limited: Harness, tmp_path) -> None:
    """As root, a run is an unprivileged uid from the range and cannot read root's 0600 files."""
    if not _isolation(limited).per_run_uids:
        pytest.skip("per-run users need root and a Python readable by other users")
    secret = tmp_path / "secret.conf"
    secret.write_text("key")
    secret.chmod(0o600)
    tmp_path.chmod(0o755)
    result = limited.run(f"import os\nprint(os.getuid(), os.getgid(), os.getgroups())\nopen({str(secret)!r}).read()")
    uid, gid, groups = result.stdout.split(maxsplit=2)
    assert 10000 <= int(uid) <= 10999
    assert gid == uid
    assert groups.strip() == "[]"
    assert "PermissionError" in result.stderr


def test_escaped_daemon_is_killed_after_the_run(defaults: Harness) -> None:
    """A double-forked daemon in its own session does not outlive its run."""
    code = (
        "import os, subprocess\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        subprocess.Popen(['sleep', '93.75'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "        os.execvp('sleep', ['sleep', '93.5'])\n"
        "    os._exit(0)\n"
        "import time\ntime.sleep(0.3)\nprint('parent done')"
    )
    result = defaults.run(code)
    assert result.stdout == "parent done\n"
    assert _gone("93.5")
    assert _gone("93.75")


def test_fork_bomb_is_contained(limited: Harness) -> None:
    """A fork bomb hits the process limit, is cleaned up, and the next run works."""
    if not _isolation(limited).per_run_uids:
        pytest.skip("RLIMIT_NPROC per run needs per-run users")
    code = "import os, time\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        time.sleep(0.01)"
    result = limited.run(code, timeout=2)
    assert result.outcome.cause is Cause.TIMEOUT
    time.sleep(0.5)
    uids = {p.uids().real for p in psutil.process_iter() if p.status() != psutil.STATUS_ZOMBIE}
    assert not [uid for uid in uids if 10000 <= uid <= 10999]
    assert limited.run("print('ok')").stdout == "ok\n"


def test_network_off_gets_no_network_when_namespaces_are_allowed(defaults: Harness) -> None:
    """With enable_network false a run cannot reach even loopback (when the host allows namespaces)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).close()\nprint('connected')"
    try:
        online = defaults.run(code, enable_network=True)
        offline = defaults.run(code, enable_network=False)
    finally:
        listener.close()
    assert online.stdout == "connected\n"
    if not _isolation(defaults).network_namespace:
        pytest.skip("this host does not let the service create network namespaces")
    assert offline.exit_code == 255
    assert "OSError" in offline.stderr


def test_proxies_reach_network_runs_only() -> None:
    """The proxy settings are in a network run's environment and not in a network-off run's, in
    either order (the run child sets the network run's environment up before the run arrives)."""
    harness = Harness("fork", http_proxy="http://proxy.invalid:3128")
    try:
        code = "import os\nprint(os.environ.get('HTTP_PROXY'), sorted(os.environ))"
        online, offline, online_again = (
            harness.run(code, enable_network=network).stdout for network in (True, False, True)
        )
        assert online.startswith("http://proxy.invalid:3128 ")
        assert online == online_again
        assert offline == "None ['HOME', 'LANG', 'MPLCONFIGDIR', 'PATH', 'TMPDIR', 'XDG_CACHE_HOME']\n"
    finally:
        harness.close()


def test_run_is_the_oom_killers_first_choice(defaults: Harness) -> None:
    """A run's oom_score_adj is above the worker's (here the test process), so memory exhaustion ends the run."""
    with open("/proc/self/oom_score_adj") as file:
        worker_score = int(file.read())
    result = defaults.run("print(open('/proc/self/oom_score_adj').read().strip())")
    assert result.exit_code == 0, result.stderr
    assert int(result.stdout) > worker_score

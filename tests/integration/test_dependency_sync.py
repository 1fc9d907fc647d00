"""Packages listed in the requirement files are installed once per service and warm on every worker.

Every test serves tiny wheels made at test time from a PEP 503 index on loopback (`package_index.py`)
and points the service at it through `PIP_MIRROR_URL`; pip's own configuration is switched off, so
nothing but that index is asked.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import Server, free_port
from tests.integration.package_index import PackageIndex, serving
from tests.polling import wait_for

pytestmark = pytest.mark.integration

INSTALL_TIMEOUT = 90.0
THREAD_STARTER = "import threading, time\nthreading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n"


@pytest.fixture
def index(tmp_path: Path) -> Iterator[PackageIndex]:
    with serving(tmp_path / "index") as started:
        started.add("tinypkg", "1.0", "VALUE = 42\n")
        started.add("otherpkg", "2.0", "VALUE = 'other'\n")
        started.add("threadpkg", "1.0", THREAD_STARTER)
        # A package that needs an httpx the service does not run on, and such an httpx to tempt pip.
        started.add("needs-old-httpx", "1.0", "", requires=["httpx<0.1"])
        started.add("httpx", "0.0.1", "__version__ = '0.0.1'\n")
        yield started


@pytest.fixture
def deps_server(
    start_server: Callable[..., Server], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Server]:
    """Factory: a server whose mounted requirements file says `requirements`, with a package dir in `tmp_path`."""
    for name in list(os.environ):
        if name.startswith("PIP_"):
            monkeypatch.delenv(name)  # the machine's pip settings would add other indexes
    requirements = tmp_path / "dependencies" / "python-requirements.txt"
    requirements.parent.mkdir(exist_ok=True)

    def start(text: str | None, mirror: str, **env: object) -> Server:
        if text is not None:
            requirements.write_text(text)
        settings: dict[str, object] = {
            "SANDBOX_REQUIREMENTS_FILES": str(requirements),
            "SANDBOX_PACKAGES_DIR": str(tmp_path / "packages"),
            "PIP_MIRROR_URL": mirror,
            "PIP_CONFIG_FILE": os.devnull,
            "SANDBOX_WORKERS": "2",
            **env,
        }
        return start_server(**settings)

    start.requirements = requirements  # type: ignore[attr-defined]
    return start


def listing(server: Server) -> dict[str, str]:
    resp = server.http.get("/v1/sandbox/dependencies", params={"language": "python3"})
    body = resp.json()
    assert body["code"] == 0, body
    assert all(set(entry) == {"name", "version"} for entry in body["data"]["dependencies"]), body
    return {entry["name"]: entry["version"] for entry in body["data"]["dependencies"]}


def rewarmed(server: Server, times: int = 1) -> bool:
    return server.stderr_text().count("Every worker re-warmed") >= times


def run_fresh(server: Server, code: str) -> dict:
    """One run over a new connection (so the kernel may hand it to either worker)."""
    with httpx.Client(base_url=server.url, headers={"X-Api-Key": server.api_key}, timeout=30, trust_env=False) as c:
        body = c.post("/v1/sandbox/run", json={"language": "python3", "code": code, "enable_network": True}).json()
    assert body["code"] == 0, body
    return body["data"]


def on_every_worker(server: Server, code: str, workers: int = 2, most: int = 200) -> list[str]:
    """Runs `code` over new connections until runs of every worker were seen; every run must exit 0.

    The snippet's first stdout line must be its zygote's pid (`os.getppid()`); the rest of the lines are returned.
    """
    zygotes: set[str] = set()
    outputs: list[str] = []
    for _ in range(most):
        data = run_fresh(server, "import os\nprint(os.getppid())\n" + code)
        assert data["exit_code"] == 0, data
        first, _, rest = data["stdout"].partition("\n")
        zygotes.add(first)
        outputs.append(rest)
        if len(zygotes) >= workers:
            return outputs
    pytest.fail(f"runs reached {len(zygotes)} of {workers} workers in {most} runs")


def test_health_answers_while_installing_then_every_worker_has_the_package(deps_server, index):
    """1. With the index holding its downloads, the service is healthy and a run importing the package is told
    it is being installed. 2. Released, the install finishes and every worker's zygote preloads the package."""
    index.hold()
    server = deps_server("tinypkg==1.0\n", index.url)
    assert wait_for(lambda: index.downloads, INSTALL_TIMEOUT), server.output()
    assert server.health_status() == 200
    data = run_fresh(server, "import tinypkg")
    assert data["exit_code"] == 255
    assert "ModuleNotFoundError: No module named 'tinypkg'" in data["stderr"]
    assert "tinypkg is being installed, started " in data["stderr"].splitlines()[-1]
    assert listing(server)["tinypkg"] == ""
    index.release()
    assert wait_for(lambda: rewarmed(server), INSTALL_TIMEOUT), server.output()
    outputs = on_every_worker(
        server, "import sys\nprint('tinypkg' in sys.modules)\nimport tinypkg\nprint(tinypkg.VALUE)"
    )
    assert set(outputs) == {"True\n42\n"}
    assert listing(server)["tinypkg"] == "1.0"
    metrics = server.http.get("/metrics").text
    assert 'dify_sandbox_dependency_state{package="tinypkg",state="installed"} 1.0' in metrics
    assert "dify_sandbox_dependency_sync_ok 1.0" in metrics


def test_a_restart_with_an_unchanged_file_installs_nothing(deps_server, index):
    """1. A first service installs the package. 2. A second one, same file and dir, downloads nothing and
    runs pip never; its first run imports the package, and its zygotes soon have it preloaded."""
    first = deps_server("tinypkg==1.0\n", index.url)
    assert wait_for(lambda: rewarmed(first), INSTALL_TIMEOUT), first.output()
    first.stop()
    downloads = len(index.downloads)
    second = deps_server(None, index.url)
    assert run_fresh(second, "import tinypkg\nprint(tinypkg.VALUE)")["stdout"] == "42\n"
    preloaded = "import sys\nprint('tinypkg' in sys.modules)"
    assert wait_for(lambda: run_fresh(second, preloaded)["stdout"] == "True\n", INSTALL_TIMEOUT), second.output()
    assert wait_for(lambda: "Requirements synced" in second.stderr_text(), INSTALL_TIMEOUT), second.output()
    assert "Installing packages" not in second.stderr_text()
    assert len(index.downloads) == downloads


def test_update_after_the_file_changes_installs_and_rewarms_every_worker(deps_server, index):
    """1. The service has tinypkg. 2. The file gains otherpkg and `update` is called: it answers once every
    worker re-warmed, and every worker's zygote has otherpkg preloaded."""
    server = deps_server("tinypkg==1.0\n", index.url)
    assert wait_for(lambda: rewarmed(server), INSTALL_TIMEOUT), server.output()
    deps_server.requirements.write_text("tinypkg==1.0\notherpkg==2.0\n")
    resp = server.http.post("/v1/sandbox/dependencies/update", json={"language": "python3"}, timeout=INSTALL_TIMEOUT)
    assert resp.json() == {"code": 0, "message": "success", "data": {}}
    assert rewarmed(server, 2)
    outputs = on_every_worker(server, "import sys\nprint('otherpkg' in sys.modules, 'tinypkg' in sys.modules)")
    assert set(outputs) == {"True True\n"}
    assert listing(server)["otherpkg"] == "2.0"


def test_an_unreachable_index_leaves_the_service_healthy_and_the_package_failed(deps_server):
    """1. The mirror is a closed port: the install fails with a log line naming the package, and the
    service stays up. 2. The listing keeps "" for it, `update` fails naming it, `refresh` (which syncs too)
    lists null, and runs still work."""
    server = deps_server("tinypkg==1.0\n", f"http://127.0.0.1:{free_port()}/simple/")
    assert wait_for(lambda: "Package install failed" in server.stderr_text(), INSTALL_TIMEOUT), server.output()
    log = server.stderr_text()
    assert "requirement='tinypkg==1.0'" in log
    assert "reason='index unreachable'" in log
    assert server.health_status() == 200
    assert listing(server)["tinypkg"] == ""
    body = server.http.post("/v1/sandbox/dependencies/update", json={"language": "python3"}, timeout=60).json()
    assert body["code"] == -500
    assert "tinypkg (failed" in body["message"]
    refreshed = server.http.get("/v1/sandbox/dependencies/refresh", params={"language": "python3"}, timeout=60)
    assert refreshed.content == b'{"code":0,"message":"success","data":{"dependencies":null}}'
    data = run_fresh(server, "import tinypkg")
    assert "tinypkg could not be installed (failed" in data["stderr"]
    metrics = server.http.get("/metrics").text
    assert 'dify_sandbox_dependency_state{package="tinypkg",state="failed"} 1.0' in metrics
    assert "dify_sandbox_dependency_sync_ok 0.0" in metrics
    assert run_fresh(server, "print(1)")["stdout"] == "1\n"
    assert server.proc.poll() is None


def test_a_requirement_that_conflicts_with_the_service_is_refused(deps_server, index, tmp_path):
    """A line that pins another httpx is refused without pip, and a package that needs one is refused by the
    resolver: both are logged, and the service's own httpx is untouched."""
    server = deps_server("httpx==0.27.0\nneeds-old-httpx\n", index.url)
    assert wait_for(lambda: "Requirements synced" in server.stderr_text(), INSTALL_TIMEOUT), server.output()
    log = server.stderr_text()
    assert "Requirement refused: it conflicts with the service's own packages" in log
    assert "requirement='needs-old-httpx'" in log
    assert "conflicts with the service's own httpx" in log
    assert run_fresh(server, "import httpx\nprint(httpx.__version__)")["stdout"] == "0.28.1\n"
    assert not list((tmp_path / "packages").rglob("httpx*")), "an httpx was installed beside the service's"
    assert listing(server)["needs-old-httpx"] == ""


def test_a_run_cannot_write_into_the_package_dir(deps_server, index):
    """A run can import from the package dir but neither change a file there nor add one."""
    server = deps_server("tinypkg==1.0\n", index.url)
    assert wait_for(lambda: rewarmed(server), INSTALL_TIMEOUT), server.output()
    code = (
        "import os, tinypkg\n"
        "for attempt in (lambda: open(tinypkg.__file__, 'a'),\n"
        "                lambda: open(os.path.join(os.path.dirname(tinypkg.__file__), 'new.py'), 'w')):\n"
        "    try:\n"
        "        attempt()\n"
        "        print('written')\n"
        "    except PermissionError:\n"
        "        print('denied')\n"
    )
    assert run_fresh(server, code)["stdout"] == "denied\ndenied\n"


def test_a_module_that_starts_a_thread_is_not_preloaded(deps_server, index):
    """A requirement whose import leaves a thread running is left out of the preload (with a warning naming it):
    the zygote stays single-threaded, and runs still import the module themselves."""
    server = deps_server("threadpkg==1.0\ntinypkg==1.0\n", index.url)
    assert wait_for(lambda: rewarmed(server), INSTALL_TIMEOUT), server.output()
    assert "left threads running" in server.stderr_text()
    assert "module='threadpkg'" in server.stderr_text()
    outputs = on_every_worker(server, "import sys\nprint('threadpkg' in sys.modules, 'tinypkg' in sys.modules)")
    assert set(outputs) == {"False True\n"}
    assert run_fresh(server, "import threadpkg, threading\nprint(threading.active_count())")["stdout"] == "2\n"
    assert all(zygote.num_threads() == 1 for zygote in server.zygotes())


def test_numeric_libraries_preload_single_threaded_and_runs_get_the_operators_thread_count(start_server):
    """numpy preloads with its thread pools pinned to 1 (the zygote keeps one thread), and a run sees the
    operator's OMP_NUM_THREADS again."""
    pytest.importorskip("numpy")
    server = start_server(SANDBOX_PRELOAD_MODULES="json,numpy", ALLOWED_ENV_VARS="OMP_NUM_THREADS", OMP_NUM_THREADS="3")
    data = server.run_ok("import os, sys\nprint('numpy' in sys.modules, os.environ.get('OMP_NUM_THREADS'))")
    assert data["stdout"] == "True 3\n", data
    zygotes = server.zygotes()
    assert zygotes
    assert all(zygote.num_threads() == 1 for zygote in zygotes)


def test_deps_cli_syncs_and_lists(index, tmp_path, monkeypatch):
    """`dify-sandbox deps sync` installs into the package dir and exits 0; `deps list` then shows the version;
    a sync that cannot install exits non-zero."""
    for name in list(os.environ):
        if name.startswith("PIP_"):
            monkeypatch.delenv(name)
    (tmp_path / "dependencies").mkdir()
    (tmp_path / "dependencies" / "python-requirements.txt").write_text("tinypkg==1.0\n")
    env = {**os.environ, "PIP_MIRROR_URL": index.url, "PIP_CONFIG_FILE": os.devnull}
    command = [sys.executable, "-m", "dify_sandbox", "deps"]
    synced = subprocess.run([*command, "sync"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert synced.returncode == 0, synced.stderr
    assert (tmp_path / "dependencies" / "python-packages").is_dir()
    listed = subprocess.run([*command, "list"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert '"name": "tinypkg",\n      "version": "1.0",\n      "state": "installed"' in listed.stdout
    (tmp_path / "dependencies" / "python-requirements.txt").write_text("no-such-package==1.0\n")
    failed = subprocess.run([*command, "sync"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1
    assert '"state": "failed"' in failed.stdout


def test_two_services_sharing_a_package_dir_install_once(index, tmp_path, monkeypatch):
    """1. Two syncs start on one package dir while the index holds the download. 2. Released, both succeed,
    and the wheel was downloaded once: the second waited for the first's lock and found the package there."""
    for name in list(os.environ):
        if name.startswith("PIP_"):
            monkeypatch.delenv(name)
    requirements = tmp_path / "python-requirements.txt"
    requirements.write_text("tinypkg==1.0\n")
    env = {
        **os.environ,
        "PIP_MIRROR_URL": index.url,
        "PIP_CONFIG_FILE": os.devnull,
        "SANDBOX_REQUIREMENTS_FILES": str(requirements),
        "SANDBOX_PACKAGES_DIR": str(tmp_path / "shared"),
    }
    command = [sys.executable, "-m", "dify_sandbox", "deps", "sync"]
    index.hold()
    syncs = [
        subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        assert wait_for(lambda: index.downloads, INSTALL_TIMEOUT)
        index.release()
        outputs = [sync.communicate(timeout=120) for sync in syncs]
    finally:
        for sync in syncs:
            if sync.poll() is None:
                sync.kill()
                sync.wait()
    assert [sync.returncode for sync in syncs] == [0, 0], outputs
    assert len(index.downloads) == 1
    assert sum("Installing packages" in err for _, err in outputs) == 1

"""Operator tools behind ``dify-sandbox run FILE`` and ``dify-sandbox check``, with no server and no port.

Both build the :class:`~dify_sandbox.service.Service` a server worker builds from the same
settings (same executors, limits and environment rules) inside this process, so what they show is
what ``POST /v1/sandbox/run`` would do here. ``check`` runs a known snippet in each language and
reports versions, limits and the isolation each run really had: the snippets themselves look at
their session, process group, environment, working dir, uid and rlimits, and whether they can
read this process's environment block (where a server keeps its API key) and the config file.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from dify_sandbox import __version__
from dify_sandbox._environ_block import erase_from_environment
from dify_sandbox._prctl import forbid_inspection
from dify_sandbox.api.schemas import run_data
from dify_sandbox.config import Settings
from dify_sandbox.config_file import holds_api_key
from dify_sandbox.confinement.policy import LAYER_BLOCKS, probe_layers
from dify_sandbox.errors import RequestError, SandboxError, UnsupportedLanguageError
from dify_sandbox.executors.base import Language, RunRequest, RunResult
from dify_sandbox.executors.node.pool import NodePool
from dify_sandbox.packages.layout import with_packages_dir
from dify_sandbox.packages.report import dependency_report
from dify_sandbox.self_check_probes import SELF_TEST_TEXT, probe_code
from dify_sandbox.service import Service

__all__ = ["EXIT_FAILED", "SELF_TEST_TEXT", "check_command", "run_command", "run_file", "self_check"]

# The snippet exited non-zero, it could not run, or a self-test failed.
EXIT_FAILED = 1
LANGUAGES: tuple[Language, ...] = ("python3", "nodejs")
# A fork child removes its run dir just after reporting its exit code, so the check waits a little.
RUN_DIR_REMOVAL_WAIT = 2.0
_PR_GET_DUMPABLE = 3
# /proc/<pid>/limits row titles, by the short names the report uses.
_RLIMITS = {
    "Max core file size": "core",
    "Max data size": "data",
    "Max file size": "fsize",
    "Max open files": "nofile",
    "Max processes": "nproc",
    "Max cpu time": "cpu",
}


def _language(name: str) -> Language:
    if name == "python3":
        return "python3"
    if name == "nodejs":
        return "nodejs"
    raise UnsupportedLanguageError()


def _read_code(path: Path) -> str:
    try:
        code = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RequestError(f"cannot read {path}: {exc}") from exc
    if not code:
        raise RequestError(f"code: {path} is empty")  # the API refuses an empty `code` too
    return code


async def run_file(settings: Settings, path: Path, language: str) -> dict[str, Any]:
    """Runs the snippet in ``path`` through the configured executor; returns the API's ``data`` object.

    The request is the one Dify sends, except that network access is asked for only when
    ``ENABLE_NETWORK`` allows it (the API would refuse the run instead). Raises
    :class:`RequestError` for an unreadable or empty file or an unknown language, and
    :class:`~dify_sandbox.errors.ExecutorError` when the executor cannot run it.
    """
    lang = _language(language)
    code = _read_code(path)
    request = RunRequest(lang, code, "", settings.enable_network, settings.worker_timeout)
    settings = with_packages_dir(settings)
    service = Service(settings, slot=settings.workers)  # the operator commands' uids
    try:
        await service.start(languages=(lang,))  # a Python file starts no node process, and the reverse
        result = await service.executor(lang).run(request)
    finally:
        await service.close()
    return run_data(result)


def _stat_ids(stat: object) -> tuple[int, int] | None:
    """(process group, session) from a ``/proc/<pid>/stat`` line."""
    if not isinstance(stat, str):
        return None
    # Fields after the parenthesised command name: state, ppid, pgrp, session, ...
    fields = stat.rpartition(")")[2].split()
    try:
        return int(fields[2]), int(fields[3])
    except (IndexError, ValueError):
        return None


def _rlimits(text: object) -> dict[str, int | str]:
    """Soft limits by short name from ``/proc/<pid>/limits``: a number, or ``"unlimited"``."""
    limits: dict[str, int | str] = {}
    if not isinstance(text, str):
        return limits
    for line in text.splitlines():
        for title, name in _RLIMITS.items():
            if line.startswith(title):
                soft = line[len(title) :].split()[0]
                limits[name] = int(soft) if soft.isdigit() else soft
    return limits


async def _gone(path: str, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while os.path.exists(path):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def _isolation(settings: Settings, probe: dict[str, Any]) -> dict[str, Any]:
    """What isolated the probe's run, from what it saw of itself."""
    pid = probe.get("pid")
    # The thread executor runs snippets inside this process, whose session may well be its own.
    own_process = isinstance(pid, int) and pid != os.getpid()
    ids = _stat_ids(probe.get("stat")) if own_process else None
    env_names = [str(name) for name in probe.get("env_names", [])]
    # A name the server has that is not part of a run's environment came from the server: not scrubbed.
    allowed = set(settings.run_environment(enable_network=True)) | {"HOME", "TMPDIR"}
    leaked = sorted((set(env_names) & (set(os.environ) | {"API_KEY"})) - allowed)
    cwd = probe.get("cwd")
    own_dir = isinstance(cwd, str) and cwd == probe.get("home") == probe.get("tmpdir") and cwd != os.getcwd()
    return {
        "own_process": own_process,
        "own_process_group": ids is not None and ids[0] == pid,
        "own_session": ids is not None and ids[1] == pid,
        "scrubbed_env": not leaked,
        "env_names": env_names,
        "env_from_server": leaked,
        "per_run_dir": own_dir and await _gone(str(cwd), RUN_DIR_REMOVAL_WAIT),
        "run_uid": probe.get("uid"),
        "per_run_uid": probe.get("uid") != os.getuid(),
        "server_environ_readable": probe.get("server_environ_readable"),
        "server_signalable": probe.get("server_signalable"),
        "config_file_readable": probe.get("config_file_readable"),
        "rlimits": _rlimits(probe.get("limits")),
    }


def _exposures(settings: Settings, isolation: dict[str, Any]) -> list[str]:
    """What a snippet could do to the service here, in words (empty: nothing the probes found)."""
    problems = []
    if not settings.api_key.get_secret_value():
        problems.append("API_KEY is empty (SANDBOX_ALLOW_NO_KEY=true): anyone who reaches the port can run code")
    if settings.executor == "thread":
        problems.append("python3 runs inside the server process (SANDBOX_EXECUTOR=thread): trusted code only")
    key = settings.api_key.get_secret_value()
    key_in_file = settings.config_file.is_file() and holds_api_key(settings.config_file, key)
    for language in LANGUAGES:
        seen = isolation.get(language, {})
        if seen.get("own_process") is False:
            continue  # named above
        if seen.get("server_environ_readable"):
            problems.append(f"a {language} run can read the service's environment block (where API_KEY lives)")
        if seen.get("server_signalable"):
            problems.append(f"a {language} run can signal the service's processes")
        if key_in_file and seen.get("config_file_readable"):
            problems.append(
                f"a {language} run can read the config file {settings.config_file}, which holds the API key "
                "(set API_KEY in the environment instead)"
            )
    return problems


def _self_test_entry(result: RunResult) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The report entry for one self-test run, and the probe's JSON if the run passed."""
    entry: dict[str, Any] = {
        "passed": False,
        "duration_ms": round(result.duration * 1000, 2),
        "exit_code": result.exit_code,
        "error": result.error,
    }
    if result.exit_code != 0 or result.error:
        return entry, None
    try:
        probe = json.loads(result.stdout)
    except ValueError:
        entry["error"] = f"stdout is not the expected JSON: {result.stdout[:200]!r}"
        return entry, None
    if not isinstance(probe, dict) or probe.get("echo") != SELF_TEST_TEXT:
        entry["error"] = f"the known text did not come back intact: {result.stdout[:200]!r}"
        return entry, None
    entry["passed"] = True
    return entry, probe


def _server_non_dumpable() -> bool | None:
    """Whether this process is marked non-dumpable (what a server worker does); None without prctl."""
    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return None
    value = int(ctypes.CDLL(name, use_errno=True).prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0))
    return None if value < 0 else value == 0


def _node_version(service: Service) -> dict[str, str] | None:
    binary = service.nodejs.binary if isinstance(service.nodejs, NodePool) else None
    return None if binary is None else {"path": binary.path, "version": binary.version, "source": binary.source}


def _own_net_ns() -> str | None:
    try:
        return os.readlink("/proc/self/ns/net")
    except OSError:
        return None


async def _probe(
    service: Service, language: Language, enable_network: bool
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Runs the probe snippet as the API would; the self-test entry, and what the probe saw if it passed."""
    config_file = service.settings.config_file
    code = probe_code(language, config_file if config_file.is_file() else None)
    request = RunRequest(language, code, "", enable_network, service.settings.worker_timeout)
    try:
        result = await service.executor(language).run(request)
    except SandboxError as exc:
        return {"passed": False, "error": f"{type(exc).__name__}: {exc}"}, None
    return _self_test_entry(result)


async def self_check(settings: Settings) -> dict[str, Any]:
    """Runs a python3 and a nodejs self-test and reports versions, limits and the isolation each run had.

    ``ok`` is true only when both self-tests passed (the known text came back intact, exit code 0,
    empty ``error``). Isolation facts are reported, not judged: the thread executor has none of
    them by design.
    """
    settings = with_packages_dir(settings)
    service = Service(settings, slot=settings.workers)  # the operator commands' uids
    tests: dict[str, Any] = {}
    isolation: dict[str, Any] = {}
    try:
        try:
            await service.start()
        except SandboxError as exc:
            start_error = f"the service did not start: {type(exc).__name__}: {exc}"
            tests = {language: {"passed": False, "error": start_error} for language in LANGUAGES}
        else:
            for language in LANGUAGES:
                tests[language], probe = await _probe(service, language, settings.enable_network)
                if probe is not None:
                    isolation[language] = await _isolation(settings, probe)
            if "python3" in isolation:
                # A run that asks for no network gets a namespace of its own where the host allows it.
                _, offline = await _probe(service, "python3", enable_network=False)
                own = None if offline is None else offline.get("net_ns") != _own_net_ns()
                isolation["python3"]["network_namespace_when_offline"] = own
    finally:
        await service.close()
    isolation["server_non_dumpable"] = _server_non_dumpable()
    layers, _ = probe_layers(settings.isolation)
    isolation["layers"] = {
        "mode": settings.isolation,
        "landlock_abi": layers.landlock_abi,
        "in_force": {
            name: {"active": active, "blocks": LAYER_BLOCKS[name]} for name, active in layers.in_force().items()
        },
        "unavailable": layers.missing() if settings.isolation != "off" else [],
    }
    problems = _exposures(settings, isolation)
    config_file = Path(settings.config_file)
    return {
        "ok": all(test["passed"] for test in tests.values()) and not problems,
        "problems": problems,
        "versions": {
            "service": __version__,
            "python": platform.python_version(),
            "python_executable": sys.executable,
            "node": _node_version(service),
        },
        "executor": {language: service.executor_name(language) for language in LANGUAGES},
        "config_file": {"path": str(config_file), "found": config_file.is_file()},
        "limits": {
            "worker_timeout": settings.worker_timeout,
            "output_limit_bytes": settings.output_limit_bytes,
            "max_workers": settings.max_workers,
            "max_requests": settings.max_requests,
            "max_body_bytes": settings.max_body_bytes,
            "workers": settings.workers,
            "grace_seconds": settings.grace,
        },
        "isolation": isolation,
        "dependencies": dependency_report(settings, service.packages),
        "self_tests": tests,
    }


def _act_as_worker() -> None:
    # The same two steps a server worker takes before it builds its Service (server.run_worker), so
    # that runs here see what they would see there.
    erase_from_environment("API_KEY")
    forbid_inspection()


def _print_json(document: dict[str, Any], indent: int | None = None) -> None:
    separators = (",", ":") if indent is None else (",", ": ")
    text = json.dumps(document, ensure_ascii=False, indent=indent, separators=separators)
    # A lone surrogate in a snippet's output must not fail the print (the API escapes it the same way).
    sys.stdout.buffer.write(text.encode("utf-8", "backslashreplace") + b"\n")
    sys.stdout.flush()


def run_command(settings: Settings, path: Path, language: str) -> int:
    """``dify-sandbox run``: prints the API's response envelope; 0 if the snippet exited 0."""
    _act_as_worker()
    try:
        data = asyncio.run(run_file(settings, path, language))
    except RequestError as exc:
        _print_json({"code": exc.code, "message": str(exc), "data": None})
        return EXIT_FAILED
    except SandboxError as exc:
        _print_json({"code": -500, "message": str(exc), "data": None})
        return EXIT_FAILED
    _print_json({"code": 0, "message": "success", "data": data})
    return 0 if data["exit_code"] == 0 else EXIT_FAILED


def check_command(settings: Settings) -> int:
    """``dify-sandbox check``: prints the self-check report; 0 only if both self-tests passed."""
    _act_as_worker()
    report = asyncio.run(self_check(settings))
    _print_json(report, indent=2)
    return 0 if report["ok"] else EXIT_FAILED

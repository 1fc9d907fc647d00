"""The ``dify-sandbox`` command: arguments → settings → logging → serve, with named exit codes."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

from dify_sandbox import __version__
from dify_sandbox._environ_block import erase_from_environment
from dify_sandbox.config import Settings, load_settings
from dify_sandbox.confinement.policy import probe_layers
from dify_sandbox.errors import ConfigError
from dify_sandbox.logging import configure_logging
from dify_sandbox.startup_warnings import log_config_file, warn_about

__all__ = ["EXIT_CONFIG_ERROR", "main"]

EXIT_CONFIG_ERROR = 78  # sysexits' EX_CONFIG

# Arguments that are settings (the rest choose the command and its inputs).
SETTING_ARGS = ("config_file", "host", "port", "workers", "executor")
# ``run`` without --verbose prints only the run's answer: log lines below this level are dropped.
QUIET_LOG_LEVEL = "ERROR"
# File extensions of Node.js snippets for ``run``; any other file is taken for python3.
NODEJS_SUFFIXES = frozenset({".js", ".mjs", ".cjs"})

logger = structlog.get_logger("dify_sandbox.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dify-sandbox", description="Run Dify code snippets, fast.")
    parser.add_argument("--version", action="version", version=f"dify-sandbox-py {__version__}")
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="start the HTTP service (the default command)")
    serve.add_argument("--config", dest="config_file", help="YAML config file (default: conf/config.yaml)")
    serve.add_argument("--host", help="address to listen on")
    serve.add_argument("--port", type=int, help="TCP port")
    serve.add_argument("--workers", type=int, help="server worker processes")
    serve.add_argument("--executor", choices=["fork", "thread"], help="how snippets run")
    run = commands.add_parser("run", help="run one snippet file as the API would; print the JSON response")
    run.add_argument("file", type=Path, help="the snippet")
    run.add_argument(
        "--language",
        choices=["python3", "nodejs"],
        help="default: from the file's extension (.js, .mjs, .cjs: nodejs), else python3",
    )
    run.add_argument("--verbose", action="store_true", help="also write the service's log lines to stderr")
    check = commands.add_parser("check", help="self-test both runtimes; print versions, limits and isolation")
    deps = commands.add_parser("deps", help="install (sync) or list the packages of the requirement files")
    deps.add_argument("action", choices=["sync", "list"], help="sync: install what is missing (exit 1 if any fails)")
    deps.add_argument("--config", dest="config_file", help="YAML config file (default: conf/config.yaml)")
    for command in (run, check):
        command.add_argument("--config", dest="config_file", help="YAML config file (default: conf/config.yaml)")
        command.add_argument("--executor", choices=["fork", "thread"], help="how python3 snippets run")
    return parser


def _language_of(path: Path) -> str:
    """The language of a snippet file by its extension: nodejs for .js, .mjs and .cjs, else python3."""
    return "nodejs" if path.suffix.lower() in NODEJS_SUFFIXES else "python3"


def _isolation_acceptable(settings: Settings) -> bool:
    """Logs the layers that confine runs; False (after one line saying why) when ``strict`` lacks one."""
    layers, _ = probe_layers(settings.isolation)
    missing = layers.missing() if settings.isolation != "off" else []
    if settings.isolation == "strict" and missing:
        print(f"dify-sandbox: SANDBOX_ISOLATION=strict, but this host lacks {'; '.join(missing)}", file=sys.stderr)
        return False
    logger.info("Isolation", mode=settings.isolation, landlock_abi=layers.landlock_abi, **layers.in_force())
    for gap in missing:
        logger.warning("Isolation layer unavailable", layer=gap)
    if settings.isolation == "off":
        logger.warning("SANDBOX_ISOLATION=off: runs are not confined; trusted code only")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command; returns the process exit code."""
    args = _parser().parse_args(argv)
    overrides = {key: getattr(args, key, None) for key in SETTING_ARGS}
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        print(f"dify-sandbox: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    quiet = args.command == "run" and not args.verbose
    configure_logging(
        QUIET_LOG_LEVEL if quiet else settings.log_level,
        settings.log_format,
        settings.log_file,
        settings.log_file_max_bytes,
        settings.log_file_backups,
    )
    log_config_file(settings)
    if args.command == "deps":
        from dify_sandbox.packages import commands

        return commands.sync_command(settings) if args.action == "sync" else commands.list_command(settings)
    if args.command in ("run", "check"):
        # A one-shot command must not write its metrics into a running server's multiprocess dir.
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        from dify_sandbox import operator_tools

        if args.command == "run":
            language = args.language or _language_of(args.file)
            return operator_tools.run_command(settings, args.file, language)
        return operator_tools.check_command(settings)
    logger.info("Starting", version=__version__, settings=settings.redacted())
    warn_about(settings)
    if not _isolation_acceptable(settings):
        return EXIT_CONFIG_ERROR
    # The settings hold the key from here on (workers get them pickled); no process we start,
    # multiprocessing's resource tracker included, may find it in its environment, nor ours.
    erase_from_environment("API_KEY")
    from dify_sandbox.server import serve

    return serve(settings)

"""What start-up says about the settings: the config file it read, keys that file has wrong, risky values.

None of these stops the service (invalid values do, in ``config.py``); each is a line an operator
sees in the first minutes, where a silent default or a setting read differently than it was meant
would otherwise cost an afternoon. Dify's own ``config.yaml`` triggers several of them on purpose:
it turns ``debug`` on and caps concurrency far below what this service is built for.
"""

from __future__ import annotations

import structlog

from dify_sandbox.config import Settings
from dify_sandbox.config_file import read_document, unknown_keys
from dify_sandbox.errors import ConfigError

__all__ = ["log_config_file", "warn_about"]

logger = structlog.get_logger("dify_sandbox.startup_warnings")

# Settings the official service has that do nothing here, by env name and field.
_NO_EFFECT = {
    "PYTHON_LIB_PATH": "python_lib_path",
    "ALLOWED_SYSCALLS": "allowed_syscalls",
    "PYTHON_PATH": "python_path",
}
# The per-worker caps, by env name and field, and what each counts.
_CAPS = {
    "MAX_WORKERS": ("max_workers", "runs executing at once"),
    "MAX_REQUESTS": ("max_requests", "runs in flight before HTTP 503"),
}


def log_config_file(settings: Settings) -> None:
    """Says which config file was read (or that none was), then warns once per key no setting reads."""
    path = settings.config_file
    if not path.is_file():
        logger.info("No config file found; defaults and the environment apply", path=str(path.absolute()))
        return
    logger.info("Config file read", path=str(path.absolute()))
    try:
        document = read_document(path)
    except ConfigError as exc:  # it was read a moment ago; changed since, it is no longer what applies
        logger.warning("Config file changed while starting; not checked for unknown keys", error=str(exc))
        return
    for unknown in unknown_keys(document, Settings.model_fields):
        logger.warning(
            "Unknown key in the config file; ignored",
            key=unknown.key,
            did_you_mean=unknown.close_match,
            path=str(path),
        )


def warn_about(settings: Settings) -> None:
    """Warns about settings that are valid but unsafe, mistaken or without effect."""
    if not settings.api_key.get_secret_value():
        logger.warning(
            "API_KEY is empty: authentication is off, anyone who reaches the port can run code",
            allowed_by="SANDBOX_ALLOW_NO_KEY",
        )
    if settings.debug:
        logger.warning(
            "DEBUG is on: the OpenAPI docs are served at /docs on the sandbox port and every request is logged",
            path="/docs",
            port=settings.port,
        )
    for name, (field, meaning) in _CAPS.items():
        value: int = getattr(settings, field)
        default = Settings.model_fields[field].default
        if value < default:
            logger.warning(
                f"{name} counts per server worker and is below our default; the official defaults throttle runs",
                setting=name,
                counts=meaning,
                per_server_worker=value,
                server_workers=settings.workers,
                whole_service=value * settings.workers,
                our_default=default,
                advice="remove it (Dify's config.yaml sets max_workers: 4, max_requests: 50) to use our default",
            )
    for name, field in _NO_EFFECT.items():
        if getattr(settings, field):
            logger.warning("Setting has no effect here", setting=name)
    if settings.executor == "thread":
        logger.warning("Thread executor: snippets run inside the server process, not isolated; trusted code only")

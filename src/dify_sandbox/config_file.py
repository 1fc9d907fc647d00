"""The YAML config file in the official layout: where it is, how it maps onto settings, and keys it has wrong.

The official service reads ``conf/config.yaml`` relative to its working directory; Dify mounts
its own copy there. A file named explicitly (``--config``, ``SANDBOX_CONFIG_FILE``) must exist,
since a typo in its name would otherwise start the service on defaults without a word; the
default path may be missing (defaults apply). Keys the service does not know are reported, with
the known key they most resemble, because the file is where typos such as ``max_worker`` live.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from dify_sandbox.errors import ConfigError

__all__ = [
    "CONFIG_FILE_ENV",
    "DEFAULT_CONFIG_FILE",
    "OFFICIAL_YAML_KEYS",
    "OWN_SECTION",
    "OfficialYamlSource",
    "UnknownKey",
    "config_file_path",
    "holds_api_key",
    "read_document",
    "unknown_keys",
]

DEFAULT_CONFIG_FILE = "conf/config.yaml"
CONFIG_FILE_ENV = "SANDBOX_CONFIG_FILE"
# The YAML section that holds the settings of our own.
OWN_SECTION = "sandbox"
# How alike (difflib ratio) a key must be to a known one to be offered as what was meant.
CLOSE_MATCH_CUTOFF = 0.75

# Official YAML keys (dotted paths) and the env names they share with the official service.
OFFICIAL_YAML_KEYS: dict[str, str] = {
    "app.port": "SANDBOX_PORT",
    "app.debug": "DEBUG",
    "app.key": "API_KEY",
    "max_workers": "MAX_WORKERS",
    "max_requests": "MAX_REQUESTS",
    "worker_timeout": "WORKER_TIMEOUT",
    "python_path": "PYTHON_PATH",
    "python_lib_path": "PYTHON_LIB_PATH",
    "python_pip_mirror_url": "PIP_MIRROR_URL",
    "python_deps_update_interval": "PYTHON_DEPS_UPDATE_INTERVAL",
    "nodejs_path": "NODEJS_PATH",
    "enable_network": "ENABLE_NETWORK",
    "enable_preload": "ENABLE_PRELOAD",
    "allowed_syscalls": "ALLOWED_SYSCALLS",
    "allowed_env_vars": "ALLOWED_ENV_VARS",
    "log_path": "LOG_PATH",
    "proxy.socks5": "SOCKS5_PROXY",
    "proxy.https": "HTTPS_PROXY",
    "proxy.http": "HTTP_PROXY",
    "proxy.no_proxy": "NO_PROXY",
}


def config_file_path(named: object = None) -> tuple[Path, bool]:
    """The config file to read, and whether the operator named it (the CLI's ``named``, or the env)."""
    chosen = named or os.environ.get(CONFIG_FILE_ENV)
    return (Path(str(chosen)), True) if chosen else (Path(DEFAULT_CONFIG_FILE), False)


def read_document(path: Path) -> Mapping[str, Any]:
    """The parsed file (empty when it holds nothing); :class:`ConfigError` when it cannot be read or is no mapping."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config file {path}: {' '.join(str(exc).split())}") from exc
    if not isinstance(document, Mapping):
        raise ConfigError(f"config file {path} must hold a mapping")
    own = document.get(OWN_SECTION)
    if own and not isinstance(own, Mapping):
        raise ConfigError(f"config file {path}: `{OWN_SECTION}` must be a mapping")
    return document


class OfficialYamlSource(PydanticBaseSettingsSource):
    """Reads the config file in the official layout; a missing default file means defaults."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path, named: bool) -> None:
        super().__init__(settings_cls)
        self.path = path
        self.named = named

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ reads the whole file at once

    def __call__(self) -> dict[str, Any]:
        if not self.path.is_file():
            if self.named:
                raise ConfigError(f"config file {self.path} (--config or {CONFIG_FILE_ENV}) does not exist")
            return {}
        document = read_document(self.path)
        values: dict[str, Any] = {}
        for dotted, env_name in OFFICIAL_YAML_KEYS.items():
            value = _lookup(document, dotted)
            if value is not None:
                values[env_name] = value
        values.update(document.get(OWN_SECTION) or {})
        return values


def holds_api_key(path: Path, key: str) -> bool:
    """Whether the file holds ``key`` (as ``app.key``, or ``api_key`` under ``sandbox:``): then runs must not read it.

    A key the environment overrides is not the one in force, so only the key in force counts.
    """
    try:
        document = read_document(path)
    except ConfigError:
        return False
    found = (_lookup(document, dotted) for dotted in ("app.key", f"{OWN_SECTION}.api_key"))
    return bool(key) and any(value is not None and str(value) == key for value in found)


@dataclass(frozen=True, slots=True)
class UnknownKey:
    """A key of the file that no setting reads, and the known key it most resembles (if any)."""

    key: str
    close_match: str | None


def unknown_keys(document: Mapping[str, Any], own_keys: Iterable[str]) -> list[UnknownKey]:
    """Every key of ``document`` (top level, ``app``, ``proxy``, ``sandbox``) that no setting reads.

    ``own_keys`` are the names the ``sandbox:`` section takes (the settings' field names).
    """
    own = sorted(own_keys)
    sections: dict[str, list[str]] = {}
    for dotted in OFFICIAL_YAML_KEYS:
        head, _, rest = dotted.partition(".")
        sections.setdefault(head, [])
        if rest:
            sections[head].append(rest)
    sections[OWN_SECTION] = own
    found: list[UnknownKey] = []
    for key, value in document.items():
        name = str(key)
        if name not in sections:
            # A setting of our own written at the top level belongs under `sandbox:`.
            moved = f"{OWN_SECTION}.{name}" if name in own else None
            found.append(UnknownKey(name, moved or _close_match(name, sections)))
        elif sections[name] and isinstance(value, Mapping):
            known = sections[name]
            found.extend(
                UnknownKey(f"{name}.{sub}", _prefixed(name, _close_match(str(sub), known)))
                for sub in map(str, value)
                if sub not in known
            )
    return found


def _close_match(key: str, known: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(key, list(known), n=1, cutoff=CLOSE_MATCH_CUTOFF)
    return matches[0] if matches else None


def _prefixed(section: str, key: str | None) -> str | None:
    return None if key is None else f"{section}.{key}"


def _lookup(document: Mapping[str, Any], dotted: str) -> Any:
    node: Any = document
    for part in dotted.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node
